"""Real LOS agents in real namespaces: forwarding, cgroup limits, authentication."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import netns

from testbed.datasets.citypulse import features, load_sensor_file
from testbed.jobs import auth
from testbed.jobs.auth import new_secret
from testbed.jobs.trigger import samples_bytes
from testbed.network.local_plan import LocalPlan
from testbed.network.topology import build_topology
from testbed.providers.local.agents import agent_configs, restart_agent, start_agents
from testbed.providers.local.mesh import start_mesh
from testbed.providers.local.provider import STATE_DIR, LocalState, down, leftovers, up
from testbed.spec.loader import load_layout

from .conftest import prerequisite

pytestmark = prerequisite(
    "local-testbed",
    os.geteuid() != 0 or any(shutil.which(c) is None for c in ("ip", "babeld", "nsenter")),
    "needs root, iproute2, babeld and nsenter",
)

SMALL = """
name: small
flavors:
  fog:  {vcpus: 1, memory_mb: 2048, disk_gb: 20}
  edge: {vcpus: 1, memory_mb: 1024, disk_gb: 20}
layers:
  - {name: fog, flavor: fog, count: 2, link: {latency_ms: 2.0, bandwidth_mbit: 1000}}
  - name: edge
    flavor: edge
    count: 2
    link: {latency_ms: 2.0, bandwidth_mbit: 100}
    gateways: [2]
    uplink: {latency_ms: 5.0, bandwidth_mbit: 100}
"""


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    netns.pushns(namespace)
    try:
        yield
    finally:
        netns.popns()


class AgentBed:
    def __init__(self, plan: LocalPlan, secret: str, testbed_id: str, state: LocalState) -> None:
        self.plan = plan
        self.state = state
        self.secret = bytes.fromhex(secret)
        self.id = testbed_id

    def call(
        self,
        node: str,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        sign: bool = True,
    ) -> tuple[int, bytes]:
        url = f"http://{self.plan.address_of(node)}:7070{path}"
        all_headers = {
            **(auth.sign(self.secret, method, path, body) if sign else {}),
            **(headers or {}),
        }
        request = urllib.request.Request(
            url, data=body if method == "POST" else None, method=method, headers=all_headers
        )
        with inside(self.plan.namespaces[node]):
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

    def status(self, node: str) -> dict[str, Any]:
        return dict(json.loads(self.call(node, "GET", "/status", sign=False)[1]))

    def events(self, node: str) -> list[dict[str, Any]]:
        path = STATE_DIR / self.id / "agents" / node / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentBed]:
    layout_path = tmp_path_factory.mktemp("layout") / "small.yaml"
    layout_path.write_text(SMALL)
    topology = build_topology(load_layout(layout_path))
    testbed_id = f"t-agents-{os.getpid()}"
    state, plan = up(topology, testbed_id, cpu_scale=0.5, routing="none")
    try:
        start_mesh(plan, state, topology)
        secret = new_secret()
        full = {"prediction_m": 1000.0}  # both edge nodes are exhausted by prediction jobs
        configs = agent_configs(
            plan,
            topology,
            state,
            secret,
            state.mesh,  # babel here; batman-adv where start_mesh picked it
            overrides={"edge-1": full, "edge-2": full},
            common={"training": {"epochs": 20}, "gossip_interval_s": 0.5},
        )
        start_agents(plan, state, configs)
        bed = AgentBed(plan, secret, testbed_id, state)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and bed.status("edge-1")["views"] != ["edge-2"]:
            time.sleep(0.3)
        yield bed
    finally:
        down(testbed_id)
        assert leftovers(testbed_id)["namespaces"] == []


def _samples(citypulse: Path) -> bytes:
    frame, _ = load_sensor_file(citypulse / "traffic_aug_sep_2014" / "trafficData158324.csv.gz")
    return samples_bytes(features(frame, "traffic")[:300])


def _trigger(bed: AgentBed, body: bytes, stream: str = "s01-traffic") -> str:
    meta = json.dumps({"stream": stream, "kind": "lstm", "period_s": 240})
    status, answer = bed.call("edge-1", "POST", "/trigger", body, {"X-Trigger": meta})
    assert status == 202, answer
    return str(json.loads(answer)["trigger"])


def _report(bed: AgentBed, trigger: str, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in bed.events("edge-1"):
            if event["kind"] == "report" and event["trigger"] == trigger:
                return event
        time.sleep(0.5)
    raise AssertionError(f"no report for {trigger}")


def test_a_job_forwarded_two_hops_runs_in_the_targets_cgroup(
    testbed: AgentBed, citypulse: Path
) -> None:
    trigger = _trigger(testbed, _samples(citypulse))
    report = _report(testbed, trigger)
    assert report["outcome"] == "executed", report
    assert report["path"][:2] == ["edge-1", "edge-2"] and report["path"][2].startswith("fog-")
    target = report["path"][2]
    run = report["run"]
    assert run["node"] == target and run["t_send"] > 0
    assert report["real_quota_m"] == pytest.approx(run["limit_m"] * 0.5)
    quota_s = report["real_quota_m"] / 1000
    assert report["cpu_seconds"] <= quota_s * (report["t_total"] + 0.2) * 1.03
    assert report["cgroup"].startswith(f"los-testbed/{testbed.id}/{target}/")
    executed = [e for e in testbed.events(target) if e["kind"] == "executed"]
    assert executed and executed[-1]["trigger"] == trigger
    models = STATE_DIR / testbed.id / "agents" / "edge-1" / "models" / "s01-traffic"
    assert (models / "v000001" / "model.bin").exists()  # stored at the source's repository
    decisions = [e for e in testbed.events("edge-2") if e["kind"] == "decided"]
    assert decisions[-1]["decision"] == "SendTo"


def test_a_trigger_while_the_previous_run_goes_on_is_dropped(
    testbed: AgentBed, citypulse: Path
) -> None:
    body = _samples(citypulse)
    first = _trigger(testbed, body, "s02-traffic")
    second = _trigger(testbed, body, "s02-traffic")
    dropped = [
        e for e in testbed.events("edge-1") if e["kind"] == "dropped" and e["trigger"] == second
    ]
    assert dropped and dropped[0]["reason"] == "previous-running"
    assert _report(testbed, first)["outcome"] == "executed"


def test_a_job_sent_to_a_stopped_agent_is_dropped_as_agent_down_by_the_sender(
    testbed: AgentBed, citypulse: Path
) -> None:
    """Both fog agents crash; edge-2 still holds their gossip (it forgets a node only
    after 5 silent intervals), so the job it sends to a fog node meets a refused
    connection there, and edge-2 drops it as `agent-down` with the fog node on its path.
    The agents start again afterwards, for the tests after this one."""
    fogs = ["fog-1", "fog-2"]
    body = _samples(citypulse)  # before the kill: edge-2 forgets the fog nodes in 2.5 s
    for node in fogs:
        pid = testbed.state.daemons[f"agent-{node}"]  # recorded when this bed started it
        os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    try:
        report = _report(testbed, _trigger(testbed, body))
    finally:
        for node in fogs:
            restart_agent(testbed.plan, testbed.state, node)
    assert report["outcome"] == "dropped" and report["reason"] == "agent-down", report
    assert report["path"][:2] == ["edge-1", "edge-2"] and report["path"][2] in fogs, report


def test_unauthenticated_and_malformed_requests_are_rejected_and_counted(
    testbed: AgentBed,
) -> None:
    before = testbed.status("fog-1")["counters"]
    body = json.dumps({"view": {"node": "x"}}).encode()
    assert testbed.call("fog-1", "POST", "/availability", body, sign=False)[0] == 401
    forged = {auth.TIME_HEADER: f"{time.time():.3f}", auth.SIGNATURE_HEADER: "0" * 64}
    assert testbed.call("fog-1", "POST", "/availability", body, forged, sign=False)[0] == 401
    stale = auth.sign(testbed.secret, "POST", "/availability", body, now=time.time() - 3600)
    assert testbed.call("fog-1", "POST", "/availability", body, stale, sign=False)[0] == 401
    assert testbed.call("fog-1", "POST", "/schedule", b"{not json")[0] == 400
    assert testbed.call("fog-1", "POST", "/execute", b'{"job": {}}')[0] == 400
    after = testbed.status("fog-1")["counters"]
    assert after.get("rejected-401", 0) - before.get("rejected-401", 0) == 3
    assert after.get("rejected-400", 0) - before.get("rejected-400", 0) == 2
    assert testbed.status("fog-1")["node"] == "fog-1"  # still serving


def test_an_experiment_runs_on_the_local_testbed(tmp_path: Path, citypulse: Path) -> None:
    """One cell of experiment B on real namespaces, agents and training, written in the
    same results format as the twin's."""
    import yaml

    from testbed.experiment.runner import run_experiment
    from testbed.los.schedulers import scheduler_names
    from testbed.spec.loader import load_experiment

    repo = Path(__file__).resolve().parents[1] / "experiments"
    (tmp_path / "small.yaml").write_text(SMALL)
    spec = yaml.safe_load((repo / "los-scheduling.yaml").read_text())
    spec.update(
        layout=str(tmp_path / "small.yaml"),
        calibration=str(repo / "calibration" / "calibrated.yaml"),
        schedulers=["los"],
        sweep={"stream_counts": [4], "repetitions": 1},
        iterations=3,
        timeplan=[
            {"at_s": 300, "action": "leave", "node": "fog-1"},
            {"at_s": 600, "action": "join", "node": "fog-1"},
        ],
        streams={**spec["streams"], "nodes": ["edge-1", "edge-2"]},
        local={
            "time_scale": 0.02,
            "duration_s": 900,
            "sweep": {"stream_counts": [4], "repetitions": 1},
        },
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    experiment = load_experiment(path, known_schedulers=scheduler_names())
    summary = run_experiment(experiment, "local", tmp_path / "results")
    run_dir = summary.path
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["testbed"] == "local" and manifest["status"] == "complete"
    assert manifest["capabilities"]["time_scale"] == 0.02
    import pandas as pd

    rows = pd.read_parquet(run_dir / "tables" / "triggers.parquet")
    assert len(rows) >= 8 and set(rows["stream_count"]) == {4}
    executed = rows[rows["outcome"] == "executed"]
    assert len(executed) > 0
    assert set(executed["executing_layer"]) == {"fog"}  # both edge nodes are full
    assert executed["hops"].between(1, 2).all()
    assert (executed["cpu_limit_m"] <= 400).all() and (executed["t_job"] > 0).all()
    assert (
        rows["drop_reason"].isin([None, "previous-running", "cycle", "max-hops"]).all()
        or rows["drop_reason"].isna().any()
    )
    assert summary.drop_rate["los"] < 1.0
    assert executed.groupby("stream").size().max() <= 3  # streams stop after 3 trainings
    cell = next(
        json.loads(line)
        for line in (run_dir / "events.jsonl").read_text().splitlines()
        if '"cell-finished"' in line
    )
    applied = [(w["kind"], w["sim_time"]) for w in cell["world_events"] if "sim_time" in w]
    assert applied == [("timeplan-leave", 300), ("timeplan-join", 600)]
    # deployed as on VMs: sshd per namespace, the numbered playbooks, logs fetched by fabric
    assert manifest["capabilities"]["deploy"].startswith("ansible")
    inventory = yaml.safe_load((run_dir / "deployment" / "inventory.yml").read_text())
    assert set(inventory["all"]["children"]["fog"]["hosts"]) == {"fog-1", "fog-2"}
    assert inventory["all"]["children"]["gateways"]["hosts"] == {"edge-2": {}}
    stages = [
        json.loads(line)
        for line in (run_dir / "deployment" / "stages.jsonl").read_text().splitlines()
    ]
    assert [s["playbook"] for s in stages][:3] == ["01-base.yml", "02-mesh.yml", "04-agents.yml"]
    assert all(s["status"] == "successful" and not s["failures"] for s in stages)
    assert any(w["kind"] == "collected" and w["bytes"] > 0 for w in cell["world_events"])
    fetched = run_dir / "nodes" / cell["cell"]
    assert {p.name for p in fetched.iterdir()} == {"edge-1", "edge-2", "fog-1", "fog-2"}
    reports = [
        json.loads(line)
        for node in ("edge-1", "edge-2")
        for line in (fetched / node / "agent" / "events.jsonl").read_text().splitlines()
    ]
    # the rows are the triggers each job logged before the cell's end (in its log's order);
    # a trigger sent while the replayers were being stopped may still run, uncounted
    counted = set()
    for stream, group in rows.groupby("stream"):
        log = fetched / group["source_node"].iloc[0] / "streams" / f"{stream}.jsonl"
        logged = [json.loads(line) for line in log.read_text().splitlines()]
        counted |= {t["trigger"] for t in logged[: len(group)] if t.get("trigger")}
    assert sum(
        r["kind"] == "report" and r.get("outcome") == "executed" and r["trigger"] in counted
        for r in reports
    ) == len(executed)
    # the triggers came from real replayers and prediction jobs (05-streams), which hot-swap
    # the versions their trainings publish: later triggers carry the model they ran with
    assert "prediction job per stream" in manifest["capabilities"]["streams"]
    for stream, group in rows.groupby("stream"):
        node = group["source_node"].iloc[0]
        log = fetched / node / "streams" / f"{stream}.jsonl"
        triggers = [json.loads(line) for line in log.read_text().splitlines()]
        assert len(triggers) >= len(group)
        assert all(t["sample_count"] % triggers[0]["sample_count"] == 0 for t in triggers[1:])
        if (group["outcome"] == "executed").sum() >= 2:
            assert any((t.get("model_version") or 0) >= 1 for t in triggers), triggers
    assert leftovers(f"run-{os.getpid()}")["namespaces"] == []
    _the_twin_replays_it_with_what_it_measured(experiment, run_dir, rows, tmp_path)


def _the_twin_replays_it_with_what_it_measured(
    experiment: Any, run_dir: Path, rows: Any, tmp_path: Path
) -> None:
    """The calibration derived from this run's own files brings the twin close on this
    cell: mean send + start + training + stop time per model within 35 %, and the drop
    rate within 5 points plus three of the cell's triggers (with about 13 triggers, one
    moves it by about 8 points; the twin draws its own noise). fog-1 leaves for 300 s:
    the run measured how long it stayed in its neighbours' views and how long the sends
    to it took to fail, which the twin replays (without them it dropped none of the jobs
    the testbed lost)."""
    import pandas as pd
    import yaml

    from testbed.experiment.run_calibration import with_run_calibration, write_derived
    from testbed.experiment.runner import run_experiment, testbed_view

    path = write_derived(run_dir)
    derived = yaml.safe_load(path.read_text())
    assert derived["gossip_interval_s"] == pytest.approx(1.0 / 0.02)
    assert derived["source"].startswith(f"derived from run {run_dir.name} on local")
    replay = with_run_calibration(testbed_view(experiment, "local"), path)
    twin = run_experiment(replay, "twin", tmp_path / "twin")
    theirs = pd.read_parquet(twin.path / "tables" / "triggers.parquet")
    # (not the same number of triggers: the twin's streams trigger on time, the real
    # prediction jobs here only as fast as the loaded host lets them)
    mine_done = rows[rows["outcome"] == "executed"].groupby("model")["t_complete"].mean()
    theirs_done = theirs[theirs["outcome"] == "executed"].groupby("model")["t_complete"].mean()
    for model, seconds in mine_done.items():
        assert theirs_done.get(model, 0.0) == pytest.approx(seconds, rel=0.35), model
    if (rows["drop_reason"] == "unreachable").any():  # a job was sent to fog-1 after it left
        assert derived["mesh_timeout_s"] > 0  # how long fog-1 stayed in the views
    band = 5.0 + 100.0 * 3 / len(rows)
    mine_rate = 100.0 * (rows["outcome"] == "dropped").mean()
    theirs_rate = 100.0 * (theirs["outcome"] == "dropped").mean()
    assert abs(mine_rate - theirs_rate) <= band, (mine_rate, theirs_rate)


@pytest.mark.parametrize("deploy", ["direct", "ansible"])
def test_a_killed_agent_is_survived_and_its_jobs_are_attributed(
    tmp_path: Path, citypulse: Path, deploy: str
) -> None:
    """Agents crash (SIGKILL) mid-run on the local testbed: the run finishes, the others
    keep scheduling, the jobs lost with them are `agent-down`, and an agent started
    again executes jobs again. `direct`: the harness kills and restarts the agents
    itself; `ansible`: the cell runs as on cloud servers, the kills and restarts go over
    SSH and the triggers come from real prediction jobs."""
    import pandas as pd
    import yaml

    from testbed.experiment.runner import run_experiment
    from testbed.los.schedulers import scheduler_names
    from testbed.spec.loader import load_experiment

    repo = Path(__file__).resolve().parents[1] / "experiments"
    (tmp_path / "small.yaml").write_text(SMALL)
    spec = yaml.safe_load((repo / "los-scheduling.yaml").read_text())
    timeplan = [
        {"at_s": 300, "action": "agent-stop", "node": "fog-1"},  # where jobs run
        {"at_s": 300, "action": "agent-stop", "node": "edge-1"},  # a stream source
        {"at_s": 900, "action": "agent-start", "layer": "fog"},
        {"at_s": 900, "action": "agent-start", "node": "edge-1"},
        {"at_s": 1500, "action": "agent-stop", "node": "fog-2"},  # fog-1 alone runs jobs now
    ]
    # The windows are long against the streams' periods (180-300 s): a sender keeps
    # sending to a stopped agent until it forgets it (250 s here), so a shorter window
    # may hold no trigger that reaches a live node (seen on a loaded CI host).
    spec.update(
        layout=str(tmp_path / "small.yaml"),
        calibration=str(repo / "calibration" / "calibrated.yaml"),
        schedulers=["los"],
        sweep={"stream_counts": [4], "repetitions": 1},
        timeplan=timeplan,
        streams={**spec["streams"], "nodes": ["edge-1", "edge-2"]},
        local={
            "time_scale": 0.02,
            "duration_s": 2400,
            "sweep": {"stream_counts": [4], "repetitions": 1},
            "deploy": deploy,
        },
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    experiment = load_experiment(path, known_schedulers=scheduler_names())
    summary = run_experiment(experiment, "local", tmp_path / "results")
    run_dir = summary.path
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"
    cell = next(
        json.loads(line)
        for line in (run_dir / "events.jsonl").read_text().splitlines()
        if '"cell-finished"' in line
    )
    applied = [
        (w["kind"], w["sim_time"], w["nodes"]) for w in cell["world_events"] if "sim_time" in w
    ]
    assert applied == [
        ("timeplan-agent-stop", 300, ["fog-1"]),
        ("timeplan-agent-stop", 300, ["edge-1"]),
        ("timeplan-agent-start", 900, ["fog-1", "fog-2"]),  # fog-2 runs: nothing to do
        ("timeplan-agent-start", 900, ["edge-1"]),
        ("timeplan-agent-stop", 1500, ["fog-2"]),
    ]
    assert all(w["applied_at"] > 0 for w in cell["world_events"] if "sim_time" in w)

    rows = pd.read_parquet(run_dir / "tables" / "triggers.parquet")
    reasons = rows["drop_reason"].value_counts().to_dict()
    assert "lost" not in reasons, reasons
    assert reasons.get("agent-down", 0) >= 2, reasons
    executed = rows[rows["outcome"] == "executed"]
    # the source's triggers while its agent is down are agent-down, not lost
    down = rows[(rows["source_node"] == "edge-1") & rows["time_s"].between(310, 890)]
    assert len(down) >= 1 and (down["drop_reason"] == "agent-down").all(), down
    # the others keep scheduling while fog-1 is down: jobs run on fog-2 meanwhile, and on
    # either fog node once fog-1 is back (before fog-2 stops)
    assert set(executed[executed["time_s"].between(300, 900)]["executing_node"]) <= {"fog-2"}
    assert len(executed[executed["time_s"].between(300, 1500)]) >= 1, reasons
    # the restarted agents work again: edge-1 schedules, fog-1 executes
    assert (executed["source_node"] == "edge-1").loc[executed["time_s"] > 900].any()
    assert (executed["executing_node"] == "fog-1").loc[executed["time_s"] > 1500].any()
    # a job sent to a stopped agent is refused there and dropped as agent-down by the
    # sender, until the sender forgets the silent node (5 gossip intervals, 250 s here)
    # (whether a job was sent to a stopped agent in this run depends on the timing; that
    # it happens, and how, is asserted by the test of a job sent to a stopped agent above)
    forwarded = rows[(rows["drop_reason"] == "agent-down") & (rows["hops"] > 0)]
    for row in forwarded.itertuples():
        stopped = 300 if row.path.endswith(">fog-1") else 1500
        assert row.path.endswith((">fog-1", ">fog-2")) and stopped <= row.time_s < stopped + 400
    assert leftovers(f"run-{os.getpid()}")["namespaces"] == []
    assert _processes_with(f"run-{os.getpid()}/agents/") == []  # restarted ones too
    assert _processes_in(f"/run-{os.getpid()}/") == []


def _processes_in(text: str) -> list[int]:
    """Processes whose working directory has `text` in its path (deployed services)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and text in os.readlink(entry / "cwd"):
                found.append(int(entry.name))
    return found


def _processes_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(
                errors="replace"
            ):
                found.append(int(entry.name))
    return found


def test_agents_gossip_their_layer_depth_and_gateway_role_for_los_plus() -> None:
    from types import SimpleNamespace

    from testbed.agent.messages import view_from_dict, view_to_dict
    from testbed.agent.service import Agent
    from testbed.network.local_plan import plan_local

    topology = build_topology(load_layout(Path("experiments/layouts/paper.yaml")))
    state = SimpleNamespace(cpu_scale=0.1, testbed_id="t-gossip")
    configs = agent_configs(plan_local(topology, "t-gossip"), topology, state, "s", "static")  # type: ignore[arg-type]
    assert {n: c.level for n, c in configs.items() if n.endswith("-1")} == {
        "cloud-1": 0,
        "fog-1": 1,
        "edge-1": 2,
    }
    assert {n for n, c in configs.items() if c.uplink} == {"fog-1", "edge-5"}
    view = Agent.own_view(
        SimpleNamespace(config=configs["edge-5"], lock=contextlib.nullcontext(), running={})
    )  # type: ignore[arg-type]
    received = view_from_dict(json.loads(json.dumps(view_to_dict(view))))
    assert (received.level, received.uplink) == (2, True)
