"""Dataset versions in a DVC repository: track, push to a remote, and restore any earlier version.

The repository has no Git (``--no-scm``): instead of commits it keeps one
``.dvc`` file per version under ``versions/<asset>/<md5>.dvc``, which is all
DVC needs to restore that version from its cache or its remote.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import yaml
from filelock import FileLock


class DvcDatasetStore:
    def __init__(self, repo_dir: Path | str, remote_url: str) -> None:
        self.repo_dir = Path(repo_dir)
        self.remote_url = remote_url

    def _repo(self):
        from dvc.repo import Repo

        if not (self.repo_dir / ".dvc").is_dir():
            self.repo_dir.mkdir(parents=True, exist_ok=True)
            repo = Repo.init(str(self.repo_dir), no_scm=True)
            with repo.config.edit() as conf:
                conf["core"]["analytics"] = False
                conf["core"]["remote"] = "storage"
                conf["remote"]["storage"] = {"url": self.remote_url}
            self._ignore_versions()
            return repo
        self._ignore_versions()
        return Repo(str(self.repo_dir))

    def _ignore_versions(self) -> None:
        # The saved version files all name the same output; DVC must not read them as stages, or the second
        # saved version makes every later `dvc add` fail with OutputDuplicationError.
        ignore = self.repo_dir / ".dvcignore"
        lines = ignore.read_text().splitlines() if ignore.exists() else []
        if "/versions/" not in lines:
            ignore.write_text("\n".join([*lines, "/versions/"]) + "\n")

    @contextmanager
    def _locked(self):
        # DVC refuses a second process in the same repo; concurrent runs wait their turn instead.
        self.repo_dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.repo_dir) + ".lock", timeout=600):
            yield

    def _workspace(self, asset_name: str) -> Path:
        return self.repo_dir / "data" / asset_name

    def track(self, asset_name: str, artifact_dir: Path, exclude: tuple[str, ...] = ("card.json",)) -> str:
        """Copy ``artifact_dir`` into the workspace, ``dvc add`` and push it; return its DVC md5."""
        with self._locked():
            return self._track(asset_name, artifact_dir, exclude)

    def _track(self, asset_name: str, artifact_dir: Path, exclude: tuple[str, ...]) -> str:
        repo = self._repo()
        workspace = self._workspace(asset_name)
        shutil.rmtree(workspace, ignore_errors=True)
        shutil.copytree(artifact_dir, workspace, ignore=shutil.ignore_patterns(*exclude))
        repo.add(str(workspace))
        dvc_file = workspace.with_suffix(".dvc")
        md5 = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
        versions = self.repo_dir / "versions" / asset_name
        versions.mkdir(parents=True, exist_ok=True)
        shutil.copy2(dvc_file, versions / f"{md5}.dvc")
        repo.push(targets=[str(dvc_file)])
        return md5

    def versions(self, asset_name: str) -> list[str]:
        folder = self.repo_dir / "versions" / asset_name
        return sorted(p.stem for p in folder.glob("*.dvc")) if folder.is_dir() else []

    def checkout(self, asset_name: str, version: str) -> Path:
        """Restore ``version`` (an md5 or a unique prefix of one) of ``asset_name`` into the workspace."""
        matches = [v for v in self.versions(asset_name) if v.startswith(version)]
        if len(matches) != 1:
            known = ", ".join(self.versions(asset_name)) or "none"
            raise KeyError(f"{asset_name}: version {version!r} matches {len(matches)} tracked versions "
                           f"(known: {known})")
        with self._locked():
            repo = self._repo()
            dvc_file = self._workspace(asset_name).with_suffix(".dvc")
            dvc_file.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.repo_dir / "versions" / asset_name / f"{matches[0]}.dvc", dvc_file)
            # pull fetches from the remote what the local cache lacks, then checks the files out.
            repo.pull(targets=[str(dvc_file)], force=True)
        return self._workspace(asset_name)
