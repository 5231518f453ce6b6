"""``check_manifest_audio`` in worker processes: the serial result, and its cache."""

import numpy as np
import soundfile as sf

from bestrq2_lobes.data.manifest import read_manifest
from bestrq2_lobes.data.manifest_audio import check_manifest_audio

SR = 16000


def test_parallel_check_matches_the_serial_one_and_is_cached(tmp_path):
    rows = ["ID,duration,wav"]
    for i in range(40):  # enough rows for two workers (16 clips per task)
        name = f"c{i}.wav"
        if i % 9 == 4:
            (tmp_path / name).write_text("not audio")
        elif i % 9 == 7:
            sf.write(tmp_path / name, np.zeros(400, np.int16), SR)  # too short
        else:
            sf.write(tmp_path / name, np.zeros(SR // 2 + i, np.int16), SR)
        rows.append(f"c{i},1.0,$data_root/{name}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    results = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        checked = check_manifest_audio(
            tmp_path / "m.csv",
            out / "checked.csv",
            out / "skipped.csv",
            0.25,
            data_root=str(tmp_path),
            progress=False,
            jobs=jobs,
        )
        ids = [r["ID"] for r in read_manifest(checked, data_root=str(tmp_path))]
        results[jobs] = (ids, (out / "skipped.csv").read_text())
    assert results[1] == results[2]
    ids, skipped = results[2]
    assert len(ids) == 40 - 8 and "c4" not in ids and "c7" not in ids
    assert skipped.count("cannot open as audio") == 4
    assert skipped.count("shorter than 0.25 s") == 4
    # unchanged manifest: the cache answers, the audio is not read again
    (tmp_path / "c0.wav").write_text("broken since")
    again = check_manifest_audio(
        tmp_path / "m.csv",
        tmp_path / "jobs2" / "checked.csv",
        tmp_path / "jobs2" / "skipped.csv",
        0.25,
        data_root=str(tmp_path),
        progress=False,
        jobs=2,
    )
    assert "c0" in [r["ID"] for r in read_manifest(again, data_root=str(tmp_path))]
