"""Sweeps on a real PostgreSQL server (loopback): the multi-machine setup.

The server URL comes from ``RANKLAB_TEST_POSTGRES_URL`` (``.ci/run`` installs Debian's
PostgreSQL, starts it and sets it); without it, ``postgresql://ranklab:ranklab@127.0.0.1:5432/
postgres`` is tried and the tests skip when nothing answers. When the variable is set, an
unreachable server is a failure, not a skip. Each test gets a fresh database, dropped after.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sweep_helpers import start_together, sweep_config

from ranklab.sweep import load_spec
from ranklab.sweep.spec import with_driver

pytestmark = pytest.mark.postgres

DEFAULT_URL = "postgresql://ranklab:ranklab@127.0.0.1:5432/postgres"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL to a fresh, empty database on the test server."""
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    given = os.environ.get("RANKLAB_TEST_POSTGRES_URL")
    server = make_url(with_driver(given or DEFAULT_URL))
    shown = server.render_as_string(hide_password=True)
    engine = sqlalchemy.create_engine(
        server,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 3},
    )
    try:
        conn = engine.connect()
    except sqlalchemy.exc.OperationalError as e:
        if given:
            pytest.fail(f"RANKLAB_TEST_POSTGRES_URL is set but {shown} does not answer: {e}")
        pytest.skip(
            f"no PostgreSQL server at {shown}: set RANKLAB_TEST_POSTGRES_URL to a server "
            "where the user may create databases (.ci/run installs and starts one)"
        )
    name = f"ranklab_sweep_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def test_two_workers_share_one_postgres_study(tmp_path: Path, postgres_url: str, run_cli) -> None:
    params = {
        "optimizer.lr": "tag(log, interval(1e-3, 3e-2))",
        "task.embedding_regularizer": "tag(log, interval(1e-7, 1e-3))",
    }
    path = sweep_config(tmp_path, params, trials=3, storage={"url": postgres_url})
    proc = run_cli(f"sweep={path}", "--workers", "2", "trials=6", timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ranklab:***@" in proc.stdout and "ranklab:ranklab@" not in proc.stdout  # no password
    spec = load_spec(str(path), ["trials=6"])
    trials = optuna.load_study(study_name=spec.study_name, storage=postgres_url).trials
    assert sorted(t.number for t in trials) == list(range(6))  # the total, not per worker
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers took trials
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6
    for t in trials:
        metrics = json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())
        assert metrics["val"]["auc"] == t.value
    assert (spec.dir / "experiment" / "tiny_best.yaml").is_file()
    assert (spec.dir / "param_importances.png").is_file()


def test_two_commands_creating_a_fresh_postgres_study_do_not_race(
    tmp_path: Path, postgres_url: str
) -> None:
    # Two machines starting the same command on a fresh database at the same instant: both
    # create the tables and the study (unguarded, one of them crashes).
    path = sweep_config(tmp_path, {"optimizer.lr": "interval(0.001, 0.01)"}, trials=1)
    for proc in start_together(path, tmp_path / "barrier", f"storage.url={postgres_url}"):
        assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name="tiny", storage=postgres_url)
    assert study.user_attrs["metric"] == "val/auc"
