"""The production instance setting: runs and events in a real PostgreSQL (dagster-postgres, psycopg2 scheme)."""

import dagster as dg
import psycopg2
import pytest

from vexport_pipeline_tests.defs.test_dagster import materialize, register


@pytest.mark.postgres
def test_export_runs_on_a_postgres_instance(home, media, pg_url):
    register(
        home,
        media,
        {
            "id": "pg-export",
            "source": str(media["av"]),
            "export_type": "single",
            "segments": [{"start": 0, "end": 1}],
            "targets": [{"preset": "web_720p", "quality": "draft"}],
        },
    )
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": pg_url}}}) as instance:
        result = materialize(instance, "pg-export")
        assert result.success
        assert instance.get_dynamic_partitions("exports") == ["pg-export"]
        assert instance.get_materialized_partitions(dg.AssetKey("delivery")) == {"pg-export"}
    dsn = pg_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(dsn) as conn:
        count = conn.cursor()
        count.execute("SELECT count(*) FROM event_logs WHERE asset_key LIKE '%delivery%'")
        assert count.fetchone()[0] > 0  # the events really are in PostgreSQL
