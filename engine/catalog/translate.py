"""Batched MarianMT translation of catalog text (e.g. German → English), and a tiny offline Marian for tests.

`Translator` loads a model lazily through exactly the `from_pretrained` calls a real id such as
`Helsinki-NLP/opus-mt-de-en` takes; `build_tiny_marian` writes a random-weight model in that repo's
file layout (SentencePiece models trained on a small built-in corpus), so the same path runs offline.
Random weights translate into gibberish: the tiny model is for the mechanics, not the words.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import warnings
from pathlib import Path

from ..errors import ModelUnavailable

log = logging.getLogger(__name__)

MODEL_SETTING = "DESIGN_STUDIO_TRANSLATION_MODEL"

# Marian's special tokens as the opus-mt vocab.json has them: </s> first, <unk> second, <pad> last.
EOS, UNK, PAD = "</s>", "<unk>", "<pad>"

# Without sacremoses MarianTokenizer warns on every load; the punctuation normalizer is optional.
_SACREMOSES_WARNING = "Recommended: pip install sacremoses"


def _quiet_transformers() -> None:
    """Loading prints progress bars and advice; the engine reports through its own logging (as models.py does)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _fix(model_id: str) -> str:
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return (
        f"download it once where the hub is reachable (`hf download {model_id}`, cached under HF_HOME={hf_home}), "
        f"or set {MODEL_SETTING} to a local folder, or use --profile tiny for a demo"
    )


def _looks_like_path(model_id: str) -> bool:
    return Path(model_id).is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") > 1


def _unavailable(model_id: str, exc: Exception, part: str = "weights") -> ModelUnavailable:
    log.debug("loading %s (%s) failed", model_id, part, exc_info=exc)
    folder = Path(model_id)
    if folder.is_dir() and not (folder / "model.safetensors").is_file() and any(folder.glob("*.bin")):
        return ModelUnavailable(
            f"model '{model_id}' cannot be loaded: it has only pickled weights, which can run code when loaded",
            fix="convert it to model.safetensors, or set DESIGN_STUDIO_ALLOW_PICKLE=true if you trust the file",
        )
    if folder.is_dir():
        reason = f"its {part} are missing or broken in the folder"
    elif _looks_like_path(model_id):
        reason = "no such folder"
    else:
        reason = "not found in the local cache, and the hub is unreachable"
    return ModelUnavailable(f"model '{model_id}' cannot be loaded: {reason}", fix=_fix(model_id))


class Translator:
    """A MarianMT model and its tokenizer, loaded on first use and shared by every call.

    `translate` keeps order and length, returns "" for blank inputs without running the model, translates
    each distinct text once per call, and decodes greedily so the same input always gives the same output.
    """

    def __init__(
        self,
        model_id: str,
        device: str = "cpu",
        dtype=None,
        batch_size: int = 16,
        max_length: int = 512,
        allow_pickle: bool = False,
        max_new_tokens: int = 256,
    ):
        if batch_size < 1 or max_length < 1 or max_new_tokens < 1:
            raise ValueError("batch_size, max_length and max_new_tokens must be positive")
        self.model_id = str(model_id)
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.allow_pickle = allow_pickle
        self.tokenizer = None
        self.model = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # the tokenizer keeps per-call state; torch already uses every core

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> Translator:
        """Load tokenizer and weights once (thread-safe); raise `ModelUnavailable` in one line if they cannot be."""
        if self.model is not None:
            return self
        with self._load_lock:
            if self.model is not None:
                return self
            from transformers import MarianMTModel, MarianTokenizer

            _quiet_transformers()
            kw: dict = {"use_safetensors": None if self.allow_pickle else True}
            if self.dtype is not None:
                kw["dtype"] = self.dtype  # transformers 5 spelling of torch_dtype
            try:
                model = MarianMTModel.from_pretrained(self.model_id, **kw)
            except (OSError, ValueError) as exc:
                raise _unavailable(self.model_id, exc) from None
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=_SACREMOSES_WARNING)
                    tokenizer = MarianTokenizer.from_pretrained(self.model_id)
            # MarianTokenizer asserts on a missing source.spm and fails on Path(None) or a vocab without <unk>
            except (OSError, ValueError, TypeError, AssertionError, KeyError) as exc:
                raise _unavailable(self.model_id, exc, "tokenizer files (source.spm, target.spm, vocab.json)") from None
            self.tokenizer = tokenizer
            self.model = model.to(self.device).eval()
            log.info("loaded translation model %s on %s", self.model_id, self.device)
        return self

    def _limits(self) -> tuple[int, int]:
        """Input tokens and new tokens, capped by the model's positions and its own generation max_length."""
        positions = self.model.config.max_position_embeddings
        max_input = min(self.max_length, positions)
        max_new = min(self.max_new_tokens, positions - 1)
        generation_max = getattr(self.model.generation_config, "max_length", None)
        if generation_max:
            max_new = min(max_new, generation_max - 1)  # max_length counts the decoder start token
        return max_input, max(max_new, 1)

    def translate(self, texts: list[str]) -> list[str]:
        """One translation per input, in order; blank inputs (or None) give "" and repeats are translated once."""
        import torch

        keys = [(text or "").strip() for text in texts]
        unique = sorted(dict.fromkeys(k for k in keys if k), key=len)  # similar lengths share a batch: less padding
        if not unique:
            return ["" for _ in keys]
        self.load()
        max_input, max_new = self._limits()
        done: dict[str, str] = {}
        with self._run_lock, torch.inference_mode():
            for start in range(0, len(unique), self.batch_size):
                batch = unique[start : start + self.batch_size]
                enc = self.tokenizer(
                    batch, return_tensors="pt", padding=True, truncation=True, max_length=max_input
                ).to(self.device)
                # max_length=None: the model's own max_length is already folded into max_new (and would warn)
                out = self.model.generate(**enc, num_beams=1, do_sample=False, max_new_tokens=max_new, max_length=None)
                # with a shared vocab transformers 5 decodes with the *source* spm unless told; outputs are target text
                decoded = self.tokenizer.batch_decode(out, skip_special_tokens=True, use_source_tokenizer=False)
                done.update(zip(batch, (d.strip() for d in decoded), strict=True))
        return [done[k] if k else "" for k in keys]

    def translate_one(self, text: str) -> str:
        return self.translate([text])[0]


# A small bilingual corpus of product descriptions: enough for SentencePiece to cover every character,
# umlauts and ß included, with a few hundred pieces.
_CORPUS: tuple[tuple[str, str], ...] = (
    ("Rotes Baumwoll-T-Shirt mit Rundhalsausschnitt", "Red cotton t-shirt with crew neck"),
    ("Schwarze Lederjacke für Herren", "Black leather jacket for men"),
    ("Größe M, weiche Wolle", "Size M, soft wool"),
    ("Ärmelloses Top aus Öko-Baumwolle", "Sleeveless top made of organic cotton"),
    ("Übergangsjacke mit Kapuze, wasserabweisend", "Transitional jacket with hood, water-repellent"),
    ("Blaue Jeans mit geradem Bein", "Blue jeans with straight leg"),
    ("Weißes Hemd aus Leinen, langärmelig", "White linen shirt, long-sleeved"),
    ("Grüner Strickpullover mit Zopfmuster", "Green knitted sweater with cable pattern"),
    ("Gelbes Sommerkleid mit Blumenmuster", "Yellow summer dress with floral print"),
    ("Dunkelgraue Wollmütze für den Winter", "Dark grey wool hat for winter"),
    ("Braune Stiefel aus echtem Leder", "Brown boots made of genuine leather"),
    ("Leichte Laufschuhe für Damen", "Lightweight running shoes for women"),
    ("Süße Söckchen für Mädchen, fünf Paar", "Cute socks for girls, five pairs"),
    ("Größe L, bügelfrei und pflegeleicht", "Size L, non-iron and easy care"),
    ("Maschinenwäsche bei 30 Grad", "Machine wash at 30 degrees"),
    ("Nicht im Trockner trocknen", "Do not tumble dry"),
    ("Österreichischer Trachtenjanker aus Loden", "Austrian traditional jacket made of loden"),
    ("Übergröße, locker geschnitten", "Oversized, loose fit"),
    ("Äußerst bequemer Kapuzenpullover", "Extremely comfortable hoodie"),
    ("Rosa Schal aus Kaschmir", "Pink cashmere scarf"),
    ("Gestreifter Pyjama für Kinder", "Striped pajamas for children"),
    ("Wasserdichte Regenjacke mit Reißverschluss", "Waterproof rain jacket with zipper"),
    ("Schmale Krawatte aus Seide", "Slim silk tie"),
    ("Kurze Hose mit elastischem Bund", "Shorts with elastic waistband"),
    ("Warme Daunenweste, sehr leicht", "Warm down vest, very light"),
    ("Schöne Handtasche mit goldenen Schnallen", "Beautiful handbag with golden buckles"),
    ("Gürtel aus Rindsleder, 95 cm", "Cowhide belt, 95 cm"),
    ("Bluse mit Rüschen und Knöpfen", "Blouse with ruffles and buttons"),
    ("Fußballtrikot in Größe XL", "Football jersey in size XL"),
    ("Hellblaues Polohemd aus Piqué", "Light blue polo shirt made of piqué"),
    ("Dicker Mantel für kalte Tage", "Thick coat for cold days"),
    ("Handschuhe aus weichem Fleece", "Gloves made of soft fleece"),
    ("Badeanzug mit Überkreuzträgern", "Swimsuit with crossed straps"),
    ("Anzughose aus Schurwolle, schwarz", "Suit trousers made of new wool, black"),
    ("Sneaker mit dämpfender Sohle", "Sneakers with cushioning sole"),
    ("Preis: 49,99 € inklusive Mehrwertsteuer", "Price: €49.99 including VAT"),
)


def _train_spm(lines: list[str], vocab_size: int) -> bytes:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # a small corpus may offer fewer pieces than asked for
        character_coverage=1.0,  # every character of the corpus, ä ö ü ß Ä Ö Ü included
        num_threads=1,
        minloglevel=2,
    )
    return buf.getvalue()


def build_tiny_marian(folder: Path, seed: int = 0) -> Path:
    """A random-weight MarianMT (de → en) in the opus-mt repo layout, built offline in a fraction of a second
    (plus the one-off torch / transformers import).

    Writes config.json, generation_config.json, model.safetensors, source.spm, target.spm, vocab.json
    and tokenizer_config.json, all loadable by `MarianMTModel` / `MarianTokenizer.from_pretrained(folder)`.
    """
    import sentencepiece as spm
    import torch
    from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

    _quiet_transformers()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source, target = _train_spm([de for de, _ in _CORPUS], 300), _train_spm([en for _, en in _CORPUS], 300)
    (folder / "source.spm").write_bytes(source)
    (folder / "target.spm").write_bytes(target)

    # One shared vocabulary, as opus-mt-de-en has: </s>=0, <unk>=1, the pieces of both models, <pad> last.
    vocab = {EOS: 0, UNK: 1}
    for proto in (source, target):
        sp = spm.SentencePieceProcessor(model_proto=proto)
        for i in range(sp.GetPieceSize()):
            if not (sp.IsControl(i) or sp.IsUnknown(i) or sp.IsUnused(i)):
                vocab.setdefault(sp.IdToPiece(i), len(vocab))
    vocab[PAD] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=2), encoding="utf-8")

    eos_id, pad_id = vocab[EOS], vocab[PAD]
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        forced_eos_token_id=eos_id,
        decoder_start_token_id=pad_id,  # Marian starts decoding from <pad>
        scale_embedding=True,
        init_std=0.3,  # wider than the default 0.02, so random weights give different outputs for different inputs
        share_encoder_decoder_embeddings=True,
    )
    torch.manual_seed(seed)
    model = MarianMTModel(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=pad_id,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        forced_eos_token_id=eos_id,
        bad_words_ids=[[pad_id]],  # as opus-mt: never generate <pad>
        max_length=16,  # random weights rarely pick </s>: stop early
        num_beams=1,
        do_sample=False,
    )
    model.save_pretrained(folder, safe_serialization=True)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SACREMOSES_WARNING)
        tokenizer = MarianTokenizer(
            source_spm=str(folder / "source.spm"),
            target_spm=str(folder / "target.spm"),
            vocab=str(folder / "vocab.json"),
            source_lang="de",
            target_lang="en",
            model_max_length=config.max_position_embeddings,
        )
    tokenizer.save_pretrained(folder)
    return folder
