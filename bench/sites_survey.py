"""What each steering site is on each architecture family, and whether every arm agrees with the raw hook there.

Run:  .nox/tests/bin/python bench/sites_survey.py [--out bench/SITES.md]

For each family a tiny random model is built from its config (2 layers, width 64, 4 heads, seed 0; transformers'
own classes through ``AutoModelForCausalLM.from_config``) and saved as a local model directory with the offline
tokenizer. On it, ``equiv run`` steers every site at layer 1 (``--op add --vector random:3 --scale 4 --positions
all``, 4 new tokens, no MLflow) and the table records what the ``site`` finding says the site is there, and every
finding's verdict (or the one line a refused site gets). Nothing is downloaded. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

from equiv_core.cli.main import main
from equiv_core.models.offline_tokenizer import offline_tokenizer

VOCAB = 1024
LLAMA_LIKE = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
FAMILIES: dict[str, dict[str, Any]] = {
    "gpt2": {"n_layer": 2, "n_embd": 64, "n_head": 4},
    "llama": LLAMA_LIKE,
    "mistral": LLAMA_LIKE,
    "qwen2": LLAMA_LIKE,
    "qwen3": {**LLAMA_LIKE, "head_dim": 16},
    "olmo2": LLAMA_LIKE,
    "gemma2": {**LLAMA_LIKE, "head_dim": 16, "sliding_window": 8},
    "gemma3_text": {**LLAMA_LIKE, "head_dim": 16, "sliding_window": 8},
    "phi3": {**LLAMA_LIKE, "num_key_value_heads": 4},
    "phi": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4},
    "gpt_neox": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4},
    "gptj": {"n_layer": 2, "n_embd": 64, "n_head": 4, "rotary_dim": 8},
    "opt": {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "ffn_dim": 128,
        "num_attention_heads": 4,
        "word_embed_proj_dim": 64,
    },
    "falcon": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4},
    "bloom": {"n_layer": 2, "hidden_size": 64, "n_head": 4},
    "mpt": {"n_layers": 2, "d_model": 64, "n_heads": 4},
    "mamba": {"num_hidden_layers": 2, "hidden_size": 64, "state_size": 8},
}
SITES = (
    ("block-output", ()),
    ("block-input", ()),
    ("attention-output", ()),
    ("mlp-output", ()),
    ("head-input", ("--heads", "0")),
)


def build(family: str, directory: Path) -> None:
    """The family's tiny model, seeded, saved with the offline tokenizer as a local model directory."""
    config = AutoConfig.for_model(
        family, vocab_size=VOCAB, pad_token_id=0, bos_token_id=0, eos_token_id=0, **FAMILIES[family]
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(directory)
    offline_tokenizer(VOCAB).save_pretrained(directory)


def survey(family: str, directory: Path, site: str, extra: tuple[str, ...]) -> dict[str, Any]:
    """One ``equiv run`` at ``site``: exit status, the site finding's message, every verdict (or the error line)."""
    target = directory / f"{site}.json"
    argv = ["run", "--model", str(directory), "--op", "add", "--vector", "random:3", "--scale", "4", "--layers", "1"]
    argv += ["--site", site, *extra, "--positions", "all", "--max-new-tokens", "4", "--no-mlflow"]
    errors, printed = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(printed):
        code = main([*argv, "--json", str(target)])
    if not target.is_file():
        lines = [line for line in errors.getvalue().splitlines() if "error:" in line]
        return {"family": family, "site": site, "exit": code, "error": lines[-1] if lines else "no output"}
    findings = json.loads(target.read_text())["findings"]
    verdicts = {finding["id"]: finding["verdict"] for finding in findings}
    site_message = next(
        (f"{finding['verdict']}: {finding['message']}" for finding in findings if finding["id"] == "site"),
        "(the default site: no site finding) the residual stream after the block",
    )
    return {"family": family, "site": site, "exit": code, "verdicts": verdicts, "site_message": site_message}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"# Sites by architecture family (bench/sites_survey.py; transformers {transformers.__version__}, "
        f"torch {torch.__version__})",
        "",
        "Tiny random models (2 layers, width 64, 4 heads) built from each family's config; `equiv run --op add "
        "--vector random:3 --scale 4 --layers 1 --positions all --max-new-tokens 4 --site SITE`. `findings`: every "
        "verdict but `site`'s; `site`: what the site finding says the site is on that model.",
        "",
        "| family | site | exit | findings | site |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['family']} | {row['site']} | {row['exit']} | refused | {row['error']} |")
            continue
        others = {name: verdict for name, verdict in row["verdicts"].items() if name != "site"}
        held = "all PASS" if set(others.values()) == {"PASS"} else ", ".join(f"{k} {v}" for k, v in others.items())
        message = row["site_message"].replace("|", "\\|")
        lines.append(f"| {row['family']} | {row['site']} | {row['exit']} | {held} | {message} |")
    return "\n".join(lines) + "\n"


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here (default: print it)")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, of: " + ", ".join(FAMILIES))
    arguments = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for family in arguments.families.split(","):
            directory = Path(scratch) / family
            build(family, directory)
            for site, extra in SITES:
                rows.append(survey(family, directory, site, extra))
                print(f"{family:<12} {site:<17} exit {rows[-1]['exit']}", flush=True)
    text = table(rows)
    if arguments.out is None:
        print(text)
    else:
        arguments.out.write_text(text)
        print(f"wrote {arguments.out}")


if __name__ == "__main__":
    cli()
