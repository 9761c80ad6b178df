"""The synthesised files train: the real offline teacher over world images -> train/run.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from allava.schema import load_records
from synth.cli import main
from tests.conftest import REPO, small_config_dict


def test_offline_teacher_output_trains(tmp_path: Path, world_root: Path) -> None:
    images = tmp_path / "world" / "images"
    images.mkdir(parents=True)
    for p in sorted((world_root / "images").glob("world_train_*.png"))[:24]:
        shutil.copy(p, images / p.name)
    shutil.copy(world_root / "scenes.jsonl", tmp_path / "world" / "scenes.jsonl")
    out = tmp_path / "synth"
    assert main(["laion", "--images", str(images), "--teacher", "offline", "--output-dir", str(out), "--quiet"]) == 0
    caps, _ = load_records(out / "ALLaVA-Caption-LAION.json")
    insts, _ = load_records(out / "ALLaVA-Instruct-LAION.json")
    assert len(caps) == len(insts) == 24
    assert "shapes" in caps[0].conversations[1].value  # the world's own caption, via the real teacher
    cfg = small_config_dict(tmp_path / "model", out, steps=2)
    cfg["vision_pretrain"] = None
    cfg["stages"][0]["sources"] = [{"path": "ALLaVA-Caption-LAION.json"}]
    cfg["stages"][1]["sources"] = [{"path": "ALLaVA-Instruct-LAION.json"}]
    cfg["eval"] = {"file": None}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "train/run.py", "--config", str(tmp_path / "c.yaml")], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert "'examples': 24" in proc.stdout
