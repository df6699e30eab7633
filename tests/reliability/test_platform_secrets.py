"""The platform's own secrets never leave: fake secrets exported in the environment and a real credential in the
MLflow tracking URL (a password-protected PostgreSQL on loopback) appear in no file the run wrote, not in the
Dagster instance's storage (run + event SQLite, compute logs), the registry, cards, model cards, nor MLflow params."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetKey, DagsterInstance

from ft_assets.secrets import REDACTED, redact_text, redact_url, scrub, secret_values
from tests.reliability.conftest import SMALL_CONFIG, dagster_home
from tests.test_pipeline import run_graph

FAKE_SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYFAKEKEY9931",
    "HF_TOKEN": "hf_FakeTokenAbCdEfGhIjKlMnOpQrStUv0042",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-fake-pass-5518",
    "FTOPS_DB_PASSWORD": "db-fake-pass-2207",
}
DATABASE_URL_SECRET = "url-fake-pass-9034"


def test_redaction_covers_url_credentials_and_secret_env_values():
    env = {"FTOPS_MLFLOW_URI": "http://ops:PlainPw123@mlflow.internal:5000/", "HF_TOKEN": "hf_abcdef123456",
           "FTOPS_DVC_REMOTE": "https://gitlab-token-1234@dvc.example/repo", "HOME": "/root",
           "CUDA_VISIBLE_DEVICES": "0", "MLFLOW_TRACKING_USERNAME": "ops"}
    secrets = secret_values(env)
    assert set(secrets) == {"PlainPw123", "hf_abcdef123456", "gitlab-token-1234"}
    assert redact_url("postgresql://app:p%40ss@db:5432/x") == f"postgresql://app:{REDACTED}@db:5432/x"
    assert redact_url("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    text = "uri http://ops:PlainPw123@mlflow.internal:5000/ and token hf_abcdef123456, plain s3://bucket/key"
    assert redact_text(text, secrets) == (f"uri http://ops:{REDACTED}@mlflow.internal:5000/ and token {REDACTED}, "
                                          "plain s3://bucket/key")
    nested = scrub({"cfg": ["https://gitlab-token-1234@dvc.example/repo", 3, None]}, secrets)
    assert nested == {"cfg": [f"https://{REDACTED}@dvc.example/repo", 3, None]}


def _files_containing(root: Path, needles: list[bytes]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits = [n.decode() for n in needles if n in data]
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def test_exported_secrets_and_url_passwords_never_reach_outputs(tmp_path, monkeypatch, postgres):
    for name, value in FAKE_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{DATABASE_URL_SECRET}@db.internal:5432/app")
    # A real credential in a real URL: MLflow logs every training run into the password-protected Postgres.
    monkeypatch.setenv("FTOPS_MLFLOW_URI", postgres["url"])
    monkeypatch.setenv("PGPASSWORD", postgres["password"])
    home = dagster_home(tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    root = tmp_path / "ftops"
    with DagsterInstance.from_config(str(home)) as instance:
        # Through training (MLflow, train_summary.json, the adapter's card): where the URL leaked before.
        selection = [AssetKey(n) for n in ("raw_records", "clean_records", "deduped_records", "sft_dataset",
                                           "base_model", "sft_adapter")]
        result, _ = run_graph(root, SMALL_CONFIG, n_records=200, instance=instance, asset_selection=selection)
        assert result.success
        # The run really used the credential: MLflow recorded the training run in Postgres.
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=postgres["url"])
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert runs, "no MLflow run was logged"
    needles = [v.encode() for v in [*FAKE_SECRETS.values(), DATABASE_URL_SECRET, postgres["password"]]]
    for mlflow_run in runs:
        logged = " ".join(f"{k}={v}" for k, v in {**mlflow_run.data.params, **mlflow_run.data.tags}.items())
        assert not [n for n in needles if n.decode() in logged], f"secret in MLflow params: {logged[:500]}"
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert any(w.endswith("train_summary.json") for w in written) and any("sft_adapter" in w for w in written)
    assert any(".sqlite" in w or w.endswith(".db") for w in written if w.startswith("dagster_home"))
    leaks = _files_containing(tmp_path, needles)
    assert not leaks, f"secrets written to {leaks}"
