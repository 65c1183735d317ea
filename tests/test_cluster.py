import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def check(path):
    return subprocess.run(
        [sys.executable, "-m", "sentune.cli", "cluster", "check", str(path)], capture_output=True, text=True
    )


def test_repo_cluster_files_pass_rays_schema():
    for name in ("cluster.yaml", "cluster.aws.yaml"):
        out = check(ROOT / name)
        assert out.returncode == 0 and out.stdout.strip().endswith(f"{name}: ok"), out.stdout + out.stderr


def test_broken_copy_names_each_bad_key(tmp_path):
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["provder"] = config.pop("provider")
    config["max_workers"] = "two"
    bad = tmp_path / "cluster.yaml"
    bad.write_text(yaml.safe_dump(config))
    out = check(bad)
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"{bad}: provider: missing (required)",
        f"{bad}: provder: unknown key",
        f"{bad}: max_workers: 'two' is not of type 'integer'",
    ]
