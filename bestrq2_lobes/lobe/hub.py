"""Hugging Face hub ids as encoder sources: download, convert once, cache.

``BestRQ2Encoder(source="ltuncay/BEST-RQ-2.2-base")`` (and the pretrained
interface, and the X-ARES adapters through ``BESTRQ2_ENCODER_DIR``) accept a hub
id where an encoder directory is expected. The id is resolved with
``huggingface_hub`` into its standard cache (``HF_HUB_CACHE``, ``HF_HOME``;
``revision`` picks a branch, tag or commit), fetching only ``*.json`` and
``*.safetensors`` files: the repository's remote code and any pickle file are
never downloaded, nor run. The snapshot is converted on first use
(:mod:`bestrq2_lobes.lobe.convert`) into
``$BESTRQ2_CACHE/<owner>--<name>/<commit>`` (default
``~/.cache/bestrq2_lobes``), which later uses load directly. With
``HF_HUB_OFFLINE=1`` only the caches are read; an id in neither stops with a
one-line error naming the id and the cache.

The authors' releases: ``ltuncay/BEST-RQ-2``, ``ltuncay/BEST-RQ-2.1-base``,
``ltuncay/BEST-RQ-2.2-base`` (recommended), ``ltuncay/BEST-RQ-2.2-base-2M`` and
the one-stage ``ltuncay/BEST-RQ-ViT``.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from bestrq2_lobes.lobe.encoder_dir import CONFIG_FILE, EncoderDirError, read_config

RELEASED = (
    "ltuncay/BEST-RQ-2",
    "ltuncay/BEST-RQ-2.1-base",
    "ltuncay/BEST-RQ-2.2-base",
    "ltuncay/BEST-RQ-2.2-base-2M",
    "ltuncay/BEST-RQ-ViT",
)
CACHE_ENV = "BESTRQ2_CACHE"
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.md"]
_HUB_ID = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$"
)


def is_hub_id(source) -> bool:
    """True for ``owner/name`` strings that are not an existing local path.

    Example
    -------
    >>> is_hub_id("ltuncay/BEST-RQ-2"), is_hub_id("/abs/dir"), is_hub_id(None)
    (True, False, False)
    """
    if not isinstance(source, str) or os.path.exists(source):
        return False
    return bool(_HUB_ID.match(source)) and ".." not in source


def converted_cache() -> str:
    """Folder of the converted encoder directories (``$BESTRQ2_CACHE``)."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "bestrq2_lobes"
    )


def hub_cache() -> str:
    """The Hugging Face hub cache, read from the environment at each call."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return env
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return constants.HF_HUB_CACHE


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE")
    if flag is not None:
        return flag.strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE)


def download(repo_id: str, revision: str | None = None) -> str:
    """The local snapshot folder of a hub model (downloading it if allowed).

    Example
    -------
    >>> env = getfixture("monkeypatch")
    >>> env.setenv("HF_HUB_OFFLINE", "1")
    >>> env.setenv("HF_HUB_CACHE", str(getfixture("tmpdir")))
    >>> download("ltuncay/BEST-RQ-2")
    Traceback (most recent call last):
    ...
    bestrq2_lobes.lobe.encoder_dir.EncoderDirError: ltuncay/BEST-RQ-2: no such local ...
    """
    from huggingface_hub import snapshot_download

    cache, offline = hub_cache(), _offline()
    try:
        return snapshot_download(
            repo_id=repo_id,
            revision=revision,
            cache_dir=cache,
            allow_patterns=ALLOW_PATTERNS,
            local_files_only=offline,
        )
    except Exception as err:  # huggingface_hub raises many kinds, all one line here
        lines = str(err).strip().splitlines()
        first = (lines[0] if lines else type(err).__name__).split(". ")[0][:160]
        where = f"@{revision}" if revision else ""
        how = (
            "HF_HUB_OFFLINE is set: download it once online"
            if offline
            else "check the id, the revision and the network"
        )
        raise EncoderDirError(
            f"{repo_id}{where}: no such local directory, not in the Hugging Face "
            f"cache {cache} and not downloaded ({type(err).__name__}: {first}); {how}"
        ) from None


def resolve_source(source, revision: str | None = None):
    """An encoder directory for ``source``: a hub id is fetched and converted.

    Arguments
    ---------
    source : str or PathLike
        An encoder directory (returned unchanged) or a hub id ``owner/name``.
    revision : str, optional
        Branch, tag or commit of a hub id (default: ``main``).

    Returns
    -------
    str or PathLike
        A local encoder directory.
    """
    if not is_hub_id(source):
        return source
    snapshot = download(source, revision)
    commit = os.path.basename(os.path.normpath(snapshot))
    target = os.path.join(converted_cache(), source.replace("/", "--"), commit)
    if _is_current(target):
        return target
    return _convert_into(snapshot, target, source)


def _is_current(target: str) -> bool:
    """A complete conversion by this converter version."""
    from bestrq2_lobes.lobe.convert import CONVERTER_VERSION

    try:
        info = read_config(target).get("info", {})
    except EncoderDirError:
        return False
    return info.get("converter_version") == CONVERTER_VERSION


def _convert_into(snapshot: str, target: str, repo_id: str) -> str:
    from bestrq2_lobes.lobe.convert import convert

    if not os.path.isfile(os.path.join(snapshot, CONFIG_FILE)) and not any(
        name.endswith(".safetensors") for name in os.listdir(snapshot)
    ):
        raise EncoderDirError(f"{repo_id}: the snapshot {snapshot} holds no weights")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    try:
        convert(snapshot, tmp)
        if _is_current(target):  # another process converted it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
