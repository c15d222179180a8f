"""CLI surface that scripts rely on: shell completion, submit's `ray job submit`-like options."""

from __future__ import annotations

from typer.testing import CliRunner

from pipeline.cli import app


def test_shell_completion_is_installable() -> None:
    out = CliRunner().invoke(app, ["--help"]).output
    assert "--install-completion" in out and "--show-completion" in out


def test_submit_follows_by_default_and_takes_rays_options() -> None:
    out = CliRunner().invoke(app, ["submit", "--help"], terminal_width=200).output
    for opt in ("--wait", "--no-wait", "--runtime-env", "--entrypoint-num-cpus", "--entrypoint-num-gpus",
                "--python"):
        assert opt in out, opt


def test_submit_refuses_a_bad_runtime_env_file(tmp_path) -> None:
    env = tmp_path / "env.yaml"
    env.write_text("- just\n- a list\n")
    res = CliRunner().invoke(app, ["submit", "jobs/digits-dcgan.yaml", "--runtime-env", str(env),
                                   "--address", "http://127.0.0.1:1"])
    assert res.exit_code == 2 and "--runtime-env" in res.output
