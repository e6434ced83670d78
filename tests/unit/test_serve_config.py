"""configs/serve.yaml is a valid Serve config whose args the application builder accepts."""
from pathlib import Path

import yaml

from eai_ray.api.settings import ApiSettings, ServeSettings

ROOT = Path(__file__).resolve().parents[2]


def test_serve_yaml_points_at_the_builder_with_known_args():
    from ray.serve.schema import ServeDeploySchema

    data = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    ServeDeploySchema.model_validate(data) if hasattr(ServeDeploySchema, "model_validate") else ServeDeploySchema.parse_obj(data)
    app = data["applications"][0]
    assert app["import_path"] == "serve_deployments.app:build_app" and app["name"] == "eai"
    known = set(ApiSettings.model_fields) | {"gpu", "embedder_replicas", "llm_replicas", "mapper_replicas",
                                            "llm_backend", "embedder_cpus", "llm_cpus", "mapper_cpus",
                                            "embedder_threads", "mapper_threads", "embedder_batch_wait_s"}
    assert set(app["args"]) <= known
    assert app["args"]["auth"] is True


def test_serve_settings_from_env(monkeypatch):
    monkeypatch.setenv("EAI_SERVE_GPU", "1")
    monkeypatch.setenv("EAI_SERVE_PORT", "9001")
    s = ServeSettings.from_env()
    assert s.gpu and s.port == 9001
    assert ServeSettings.from_env(gpu=False).gpu is False


def test_eai_serve_is_a_registered_command():
    from eai_ray.cli import build_parser

    args = build_parser().parse_args(["serve", "--port", "9123", "--no-auth", "--llm-backend", "none"])
    assert args.port == 9123 and args.no_auth and args.llm_backend == "none"
    assert args.fn.__module__ == "eai_ray.cli.serve"


def test_local_cpu_requests_fit_the_machine():
    from serve_deployments.app import DEFAULT_CPUS, fit_cpus

    s = ServeSettings()
    assert fit_cpus(16, s) == DEFAULT_CPUS  # room for the defaults: unchanged
    for total in (1, 2, 2.5):
        shares = fit_cpus(total, s)
        assert sum(shares.values()) <= 0.9 * total and min(shares.values()) > 0
    many = ServeSettings(embedder_replicas=2, mapper_replicas=3)
    shares = fit_cpus(4, many)
    need = shares["embedder_cpus"] * 2 + shares["llm_cpus"] + shares["mapper_cpus"] * 3
    assert need <= 0.9 * 4


def test_readme_limits_table_matches_the_settings():
    """Every request limit, deadline and pool size in the README table exists with its real default."""
    import re

    readme = (ROOT / "README.md").read_text()
    documented = dict(re.findall(r"^\| `(EAI_[A-Z_]+)` \| ([^|]+) \|", readme, re.M))
    for name, field in ApiSettings.model_fields.items():
        if field.annotation not in (int, float) or name == "llm_timeout":
            continue
        env = ApiSettings.env_name(name)
        assert env in documented, f"{env} missing from the README limits table"
        shown = documented[env].strip().removesuffix(" s").replace(",", "")
        assert float(shown) == field.default, (env, shown, field.default)


def test_readme_settings_table_lists_every_environment_setting():
    """One settings tree, one table: every EAI_* variable of the settings classes is in the README
    with its real default."""
    import re

    from eai_ray.api.settings import ServeSettings
    from eai_ray.settings import LlmSettings, Settings, env_name

    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(EAI_[A-Z_]+)` \| ([^|]+) \|", readme, re.M))
    for cls in (Settings, LlmSettings, ServeSettings):
        for name, field in cls.model_fields.items():
            env = env_name(cls, name)
            assert env in rows, f"{env} missing from the README settings table"
            shown = rows[env].strip().strip("`")
            default = field.default
            if isinstance(default, bool):
                assert shown == ("1" if default else "0"), env
            elif default is None:
                assert shown == "-", env
            elif isinstance(default, (int, float)):
                assert float(shown) == default, env
            else:
                assert shown == str(default).replace(str(Path.home()), "~"), env
    assert "EAI_API_AUTH" in rows
