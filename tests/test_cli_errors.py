"""Every command, given bad arguments, says what is wrong in one line and exits non-zero.

The commands run in-process through :func:`pttd.cli.main` (the same path as the console script):
a traceback would surface here as an exception. Usage errors (argparse) exit 2 with a
``usage:`` line and one ``error:`` line; errors found while running exit 1 with one ``pttd:``
line.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pttd import cli


@pytest.fixture
def files(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Paths the cases name: a real registry, a broken PEM, a port someone else holds …"""
    db = tmp_path / "server.db"
    assert cli.main(["server", "room", "add", "ops", "--db", str(db)]) == 0
    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_text("not a certificate\n")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[device\nname = 'x'\n")
    bad_key = tmp_path / "bad-key.json"
    bad_key.write_text("{\n")
    bad_key.chmod(0o600)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield {
            "db": str(db),
            "missing": str(tmp_path / "nope.pem"),
            "bad_pem": str(bad_pem),
            "bad_toml": str(bad_toml),
            "bad_key": str(bad_key),
            "folder": str(tmp_path),
            "busy_port": str(holder.getsockname()[1]),
            "no_dir_out": str(tmp_path / "no" / "such" / "x.json"),
        }
    finally:
        holder.close()


# (argv with {placeholders}, exit status, what the one error line must contain)
CASES: list[tuple[list[str], int, str]] = [
    (["nope"], 2, "invalid choice: 'nope'"),
    (["server", "run", "--db", "{db}", "--port", "70000"], 2, "port 70000 is out of range"),
    (["server", "run", "--db", "{db}", "--port", "http"], 2, "'http' is not a port number"),
    (["server", "run", "--db", "{db}", "--port", "{busy_port}"], 1, "address already in use"),
    (["server", "run", "--db", "{db}", "--host", "999.1.1.1", "--port", "0"], 1, "999.1.1.1"),
    (["server", "run", "--db", "{db}", "--log-level", "LOUD"], 2, "unknown log level 'LOUD'"),
    (
        ["server", "run", "--db", "{db}", "--tls-cert", "{missing}", "--tls-key", "{missing}"],
        2,
        "nope.pem: no such file",
    ),
    (
        ["server", "run", "--db", "{db}", "--tls-cert", "{bad_pem}", "--tls-key", "{bad_pem}"],
        1,
        "cannot use certificate",
    ),
    (["server", "run", "--db", "{db}", "--tls-cert", "{bad_pem}"], 1, "go together"),
    (["server", "run", "--db", "{db}", "--max-talk-time", "-1"], 2, "--max-talk-time"),
    (["server", "run", "--db", "{db}", "--max-packet-rate", "x"], 2, "'x' is not a number"),
    (["server", "room", "add", "--db", "{db}"], 1, "room add needs a NAME"),
    (["server", "room", "add", "ops", "--db", "{db}"], 1, "ops"),
    (["server", "room", "frobnicate", "--db", "{db}"], 2, "invalid choice: 'frobnicate'"),
    (["server", "room", "list", "--db", "{folder}/typo.db"], 1, "no registry at"),
    (["server", "device", "revoke", "--db", "{db}"], 1, "device revoke needs a NAME"),
    (["server", "device", "revoke", "radio-a", "--db", "{db}"], 1, "radio-a"),
    (["server", "pair-code", "--room", "ops", "--db", "{db}", "--ttl", "0"], 2, "--ttl"),
    (["server", "pair-code", "--room", "ops", "--db", "{db}", "--url", "ftp://x"], 2, "ftp://x"),
    (
        ["server", "pair-code", "--room", "nowhere", "--db", "{db}", "--url", "ws://h:1"],
        1,
        "nowhere",
    ),
    (["run", "--config", "{missing}"], 1, "nope.pem"),
    (["run", "--config", "{bad_toml}"], 1, "bad.toml"),
    (["config", "check", "--config", "{missing}"], 1, "nope.pem"),
    (["config", "check", "--config", "{bad_toml}"], 1, "bad.toml"),
    (["config", "check"], 2, "--config"),
    (["doctor", "--timeout", "0", "--config", "{missing}"], 2, "--timeout"),
    (["audio", "list", "--nope"], 2, "unrecognized arguments: --nope"),
    (["keys", "show", "--key-file", "{missing}"], 1, "no key authority file there"),
    (["keys", "show", "--key-file", "{folder}"], 1, "not a regular file"),
    (["keys", "show", "--key-file", "{bad_key}"], 1, "not a usable key authority file"),
    (["keys", "show", "--key-file", "{bad_toml}"], 1, "must be 0600"),
    (["keys", "rotate", "--key-file", "{missing}", "--db", "{db}"], 1, "nope.pem"),
    (["keys", "approve", "radio-a", "1234", "--key-file", "{missing}", "--db", "{db}"], 1, "nope"),
    (["keys", "init", "--db", "{folder}/typo.db", "--key-file", "{missing}"], 1, "no registry at"),
]


@pytest.mark.parametrize(
    ("argv", "status", "said"), CASES, ids=[" ".join(c[0])[:60] for c in CASES]
)
def test_a_bad_argument_is_one_line_and_a_non_zero_exit(
    argv: list[str],
    status: int,
    said: str,
    files: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PTTD_SERVER_URL", raising=False)
    capsys.readouterr()
    args = [a.format(**files) for a in argv]
    try:
        code = cli.main(args)
    except SystemExit as exited:  # argparse's usage errors
        code = exited.code
    out, err = capsys.readouterr()
    assert code == status, (code, err)
    assert out == ""
    if status == 2:  # argparse: the usage, then one error line
        usage, _, error = err.rstrip("\n").rpartition("\n")
        assert usage.lstrip().startswith("usage:") or "usage:" in usage
        assert "error:" in error and said in error, err
    else:
        assert err.count("\n") == 1 and err.startswith("pttd: ") and said in err, err
    assert "Traceback" not in err
