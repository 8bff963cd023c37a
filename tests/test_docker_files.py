"""The Docker images and compose file (no Docker engine here: they are parsed and checked), and the
ICE/TURN settings they hand to ``hand2world serve``.

Dockerfiles: a small parser (line continuations, comments, parser directives, ARG/ENV defaults)
checks that every instruction is a real one, stages referenced by ``COPY --from`` exist, COPY
sources exist in the repository, the apt packages equal ``scripts/setup.sh``'s APT_PACKAGES,
torch==<setup.sh's version> is installed before the package, the entrypoint runs ``hand2world
serve --host 0.0.0.0`` (checked through the real CLI parser), port 8000 is exposed and the
HEALTHCHECK (run for real against a live server) probes ``/healthz``. Compose: valid YAML with the
app and the TURN server, their port mappings, and ICE settings the server accepts.

ICE: ``--ice-server`` / ``$HAND2WORLD_ICE_SERVERS`` reach ``RTCConfiguration`` (a STUN server on
127.0.0.1 sees the server's binding requests; its reflexive candidate is in the answer).
All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
                "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
JSON_FORM = {"CMD", "ENTRYPOINT", "SHELL"}


# ---------------------------------------------------------------------------------------------
# a tiny Dockerfile parser
@dataclass
class Instr:
    cmd: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instrs: list[Instr] = field(default_factory=list)
    vars: dict[str, str] = field(default_factory=dict)

    def all(self, cmd: str) -> list[Instr]:
        return [i for i in self.instrs if i.cmd == cmd]


def parse_dockerfile(text: str) -> list[Instr]:
    """Instructions with continuation lines joined; comments and blank lines dropped."""
    out: list[Instr] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue  # comment, parser directive or blank
        if buf and line.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker too
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        m = re.match(r"(\S+)\s*(.*)", buf, re.S)
        assert m, f"line {start}: cannot parse {buf!r}"
        out.append(Instr(m.group(1).upper(), m.group(2).strip(), start))
        assert m.group(1).isupper(), f"line {start}: write instructions in upper case ({m.group(1)})"
        buf = ""
    assert not buf, "the file ends inside a continued instruction"
    return out


def _expand(s: str, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return env.get(name, m.group(0))
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, s)


def _assignments(args: str) -> dict[str, str]:
    out = {}
    for tok in shlex.split(args):
        k, sep, v = tok.partition("=")
        out[k] = v if sep else ""
    return out


def stages(instrs: list[Instr]) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs (before the first FROM) and the build stages, with ARG/ENV defaults per stage."""
    global_args: dict[str, str] = {}
    result: list[Stage] = []
    for ins in instrs:
        if ins.cmd == "FROM":
            parts = _expand(ins.args, global_args).split()
            parts = [p for p in parts if not p.startswith("--platform")]
            assert len(parts) in (1, 3) and (len(parts) == 1 or parts[1].upper() == "AS"), ins
            result.append(Stage(parts[0], parts[2] if len(parts) == 3 else None))
            continue
        if not result:
            assert ins.cmd == "ARG", f"line {ins.line}: only ARG may precede the first FROM"
            global_args.update(_assignments(ins.args))
            continue
        stage = result[-1]
        stage.instrs.append(ins)
        if ins.cmd == "ARG":
            for k, v in _assignments(ins.args).items():
                stage.vars[k] = v or global_args.get(k, "")
        elif ins.cmd == "ENV":
            stage.vars.update({k: _expand(v, stage.vars) for k, v in _assignments(ins.args).items()})
    return global_args, result


def setup_sh() -> str:
    return (ROOT / "scripts" / "setup.sh").read_text()


def apt_packages_of_setup() -> list[str]:
    m = re.search(r"^APT_PACKAGES=\(([^)]*)\)", setup_sh(), re.M)
    assert m
    return m.group(1).split()


def torch_version_of_setup() -> str:
    m = re.search(r"pip install -q torch==([\w.]+)", setup_sh())
    assert m
    return m.group(1)


def apt_installed(stage: Stage) -> list[str]:
    pkgs: list[str] = []
    for ins in stage.all("RUN"):
        for seg in re.split(r"&&|;|\|\|", ins.args):
            toks = seg.split()
            if "apt-get" in toks and "install" in toks:
                pkgs += [t for t in toks[toks.index("install") + 1:] if not t.startswith("-")]
    return pkgs


def run_index(stage: Stage, pattern: str) -> int:
    for k, ins in enumerate(stage.instrs):
        if ins.cmd == "RUN" and re.search(pattern, _expand(ins.args, stage.vars)):
            return k
    return -1


def exec_form(ins: Instr) -> list[str]:
    value = json.loads(ins.args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), ins
    return value


def load(name: str) -> tuple[list[Instr], dict[str, str], list[Stage]]:
    instrs = parse_dockerfile((DOCKER / name).read_text())
    global_args, st = stages(instrs)
    return instrs, global_args, st


DOCKERFILES = ["Dockerfile.cpu", "Dockerfile.gpu"]


# ---------------------------------------------------------------------------------------------
def test_parser_catches_bad_files():
    assert [i.cmd for i in parse_dockerfile("# c\nFROM a AS b\nRUN x \\\n  # note\n  && y\n")] == ["FROM", "RUN"]
    with pytest.raises(AssertionError):
        parse_dockerfile("FROM a\nRUN x \\\n")  # dangling continuation
    with pytest.raises(AssertionError):
        stages(parse_dockerfile("RUN x\nFROM a\n"))
    _, st = stages(parse_dockerfile("ARG V=1\nFROM img:${V} AS s\nARG V\nENV P=/x:$V\n"))
    assert st[0].base == "img:1" and st[0].vars == {"V": "1", "P": "/x:1"}


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_instructions_are_valid(name):
    instrs, _, st = load(name)
    assert instrs[0].cmd in ("FROM", "ARG")
    bad = [(i.line, i.cmd) for i in instrs if i.cmd not in INSTRUCTIONS]
    assert not bad, bad
    names = {s.name for s in st if s.name}
    for stage in st:
        for ins in stage.instrs:
            if ins.cmd in JSON_FORM and ins.args.startswith("["):
                exec_form(ins)
            if ins.cmd == "COPY":
                toks = ins.args.split()
                flags = [t for t in toks if t.startswith("--")]
                src = [t for t in toks if not t.startswith("--")][:-1]
                assert src, ins
                frm = [f.split("=", 1)[1] for f in flags if f.startswith("--from=")]
                if frm:
                    assert frm[0] in names or ":" in frm[0], f"{name}:{ins.line}: unknown stage {frm[0]}"
                else:  # sources come from the build context: the repository root
                    for s in src:
                        assert (ROOT / s).exists(), f"{name}:{ins.line}: {s} is not in the repository"
            if ins.cmd == "EXPOSE":
                assert all(re.fullmatch(r"\d+(/(tcp|udp))?", p) for p in ins.args.split()), ins
    final = st[-1]
    assert final.all("USER") and final.all("USER")[-1].args != "root"  # the server does not run as root
    # BuildKit's per-Dockerfile ignore file keeps the venv and local node_modules out of the context
    ignored = (DOCKER / f"{name}.dockerignore").read_text().split()
    assert {".venv", ".git", "client/node_modules", "weights"} <= set(ignored)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_apt_packages_match_setup_sh(name):
    _, _, st = load(name)
    final = st[-1]
    expected = apt_packages_of_setup()
    if name == "Dockerfile.gpu":
        # the CUDA (Ubuntu 22.04) base: Chromium exists only as a snap there, and is used by the
        # browser tests only; ca-certificates for uv's Python download (documented in the file)
        expected = [p for p in expected if p != "chromium"] + ["ca-certificates"]
    assert apt_installed(final) == expected


@pytest.mark.parametrize("name", DOCKERFILES)
def test_torch_first_then_the_package_then_assets(name):
    _, _, st = load(name)
    final = st[-1]
    version = torch_version_of_setup()
    torch_re = rf'pip install --index-url "?https://download\.pytorch\.org/whl/(\w+)"? "?torch=={version}"?'
    i_torch = run_index(final, torch_re)
    i_pkg = run_index(final, r"pip install -e \.")
    i_setup = run_index(final, r"hand2world setup")
    assert 0 <= i_torch < i_pkg < i_setup, (i_torch, i_pkg, i_setup)
    index = re.search(r"download\.pytorch\.org/whl/(\w+)", _expand(final.instrs[i_torch].args, final.vars)).group(1)
    assert index == "cpu" if name == "Dockerfile.cpu" else index.startswith("cu")
    # the client's npm assets come from npm ci and land in client/node_modules
    npm = [s for s in st if any("npm ci" in i.args for i in s.all("RUN"))]
    assert npm and any(i.args.endswith("./client/node_modules") for i in final.all("COPY"))


def test_bases():
    _, _, cpu = load("Dockerfile.cpu")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-(slim-)?bookworm", cpu[-1].base)
    _, gargs, gpu = load("Dockerfile.gpu")
    assert re.fullmatch(r"nvidia/cuda:[\d.]+-(cudnn-)?runtime-ubuntu[\d.]+", gpu[-1].base)
    assert "--python 3.11" in " ".join(i.args for i in gpu[-1].all("RUN"))
    # flash-attn: an optional build arg, off by default, the same requirement as the `gpu` extra
    flash = next(s for s in gpu if s.name == "flash")
    assert flash.vars["WITH_FLASH_ATTN"] == "0"
    gpu_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    spec = re.search(r'"(flash-attn[^"]*)"', " ".join(i.args for i in flash.all("RUN"))).group(1)
    assert [spec] == gpu_extra


@pytest.mark.parametrize("name", DOCKERFILES)
def test_entrypoint_runs_serve_on_all_interfaces(name):
    from hand2world.cli import build_parser

    _, _, st = load(name)
    final = st[-1]
    argv = exec_form(final.all("ENTRYPOINT")[-1]) + exec_form(final.all("CMD")[-1])
    assert argv[:2] == ["hand2world", "serve"]
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.host == "0.0.0.0" and args.port == 8000
    assert args.func.__name__ == "_cmd_serve"
    assert "8000" in " ".join(i.args for i in final.all("EXPOSE")).split()


def _serve_healthz(port: int, stop: threading.Event):
    import uvicorn

    from hand2world.server.app import create_app
    from hand2world.server.session import ServerConfig

    server = uvicorn.Server(uvicorn.Config(create_app(ServerConfig(ice_hosts=("127.0.0.1",))), host="127.0.0.1",
                                           port=port, log_level="warning"))

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not stop.is_set():
            await asyncio.sleep(0.05)
        server.should_exit = True
        await task

    t = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    t.start()
    return t, server


@pytest.mark.parametrize("name", DOCKERFILES)
def test_healthcheck_probes_healthz(name):
    """The HEALTHCHECK command, run for real: 0 against a live server, non-zero with nothing listening."""
    import time

    from hand2world.server.clients import free_port

    _, _, st = load(name)
    hc = st[-1].all("HEALTHCHECK")
    assert len(hc) == 1
    m = re.match(r"((?:--\w[\w-]*=\S+\s+)*)CMD\s+(.*)", hc[0].args, re.S)
    assert m, hc[0].args
    opts = dict(o.lstrip("-").split("=", 1) for o in m.group(1).split())
    assert set(opts) <= {"interval", "timeout", "start-period", "start-interval", "retries"}
    argv = json.loads(m.group(2))
    assert argv[0] == "python" and "http://127.0.0.1:8000/healthz" in argv[-1]
    port = free_port()
    probe = [sys.executable, *argv[1:-1], argv[-1].replace(":8000/", f":{port}/")]
    down = subprocess.run(probe, capture_output=True, timeout=30)
    stop = threading.Event()
    thread, server = _serve_healthz(port, stop)
    try:
        t0 = time.monotonic()
        while not server.started and time.monotonic() - t0 < 20:
            time.sleep(0.05)
        up = subprocess.run(probe, capture_output=True, timeout=30)
    finally:
        stop.set()
        thread.join(20)
    assert down.returncode != 0
    assert up.returncode == 0, up.stderr


# ---------------------------------------------------------------------------------------------
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _ports(service: dict) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


def test_compose_services_and_ports():
    c = compose()
    services = c["services"]
    assert {"app", "turn"} <= set(services)
    app, turn = services["app"], services["turn"]
    assert app["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    assert (DOCKER / app["build"]["context"] / app["build"]["dockerfile"]).resolve().is_file()
    assert "8000:8000" in _ports(app)
    assert services["app-gpu"]["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert services["app-gpu"]["profiles"] == ["gpu"] and "8001:8000" in _ports(services["app-gpu"])
    assert "turn" in app["depends_on"]
    assert turn["image"].startswith("coturn/coturn")
    ports = _ports(turn)
    assert "3478:3478/udp" in ports and "3478:3478/tcp" in ports
    flags = dict(a.lstrip("-").split("=", 1) if "=" in a else (a.lstrip("-"), "") for a in turn["command"])
    lo, hi = int(flags["min-port"]), int(flags["max-port"])
    assert f"{lo}-{hi}:{lo}-{hi}/udp" in ports  # the relay range is published as a whole
    assert flags["listening-port"] == "3478" and "lt-cred-mech" in flags and "external-ip" in flags


def test_compose_app_command_and_ice_settings_are_accepted(monkeypatch):
    """The app's command parses with the real CLI; its ICE env gives a TURN server with credentials."""
    from hand2world.cli import build_parser
    from hand2world.server.cli import _config
    from hand2world.server.webrtc import rtc_configuration

    c = compose()
    turn_user = re.search(r"--user=\$\{TURN_USERNAME:-(\w+)\}", " ".join(c["services"]["turn"]["command"])).group(1)
    for name in ("app", "app-gpu"):
        svc = c["services"][name]
        env = svc["environment"]
        assert env["HAND2WORLD_ICE_USERNAME"] == f"${{TURN_USERNAME:-{turn_user}}}"
        assert env["HAND2WORLD_ICE_CREDENTIAL"].startswith("${TURN_PASSWORD")  # no default password
        monkeypatch.setenv("HAND2WORLD_ICE_SERVERS", env["HAND2WORLD_ICE_SERVERS"])
        monkeypatch.setenv("HAND2WORLD_ICE_USERNAME", turn_user)
        monkeypatch.setenv("HAND2WORLD_ICE_CREDENTIAL", "s3cret")
        args = build_parser().parse_args(["serve", *svc["command"]])
        assert args.host == "0.0.0.0" and args.port == 8000
        config = _config(args)
        servers = rtc_configuration(config).iceServers
        assert [(s.urls, s.username, s.credential) for s in servers] == [
            ("turn:turn:3478?transport=udp", turn_user, "s3cret")]
        assert re.match(r"turn:(\w+):", servers[0].urls).group(1) in c["services"]  # the compose service


# ---------------------------------------------------------------------------------------------
# ICE servers: flag / env -> ServerConfig -> RTCConfiguration
def test_ice_server_flag_env_and_validation(monkeypatch):
    from hand2world.cli import build_parser
    from hand2world.server.app import create_app
    from hand2world.server.cli import _config
    from hand2world.server.session import ServerConfig
    from hand2world.server.webrtc import rtc_configuration

    for var in ("HAND2WORLD_ICE_SERVERS", "HAND2WORLD_ICE_USERNAME", "HAND2WORLD_ICE_CREDENTIAL"):
        monkeypatch.delenv(var, raising=False)
    parse = build_parser().parse_args
    assert _config(parse(["serve"])).ice_servers == ()
    assert rtc_configuration(_config(parse(["serve"]))).iceServers == []  # default: no STUN/TURN at all
    monkeypatch.setenv("HAND2WORLD_ICE_SERVERS", "stun:127.0.0.1:3478, turn:127.0.0.1:3478?transport=tcp")
    monkeypatch.setenv("HAND2WORLD_ICE_USERNAME", "u")
    monkeypatch.setenv("HAND2WORLD_ICE_CREDENTIAL", "p")
    config = _config(parse(["serve"]))
    assert config.ice_servers == ("stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=tcp")
    got = [(s.urls, s.username, s.credential) for s in rtc_configuration(config).iceServers]
    assert got == [("stun:127.0.0.1:3478", None, None), ("turn:127.0.0.1:3478?transport=tcp", "u", "p")]
    # the page gets the same servers from /config for its own RTCPeerConnection
    from fastapi.testclient import TestClient

    with TestClient(create_app(config)) as client:
        assert client.get("/config").json()["ice_servers"] == [
            {"urls": "stun:127.0.0.1:3478"}, {"urls": "turn:127.0.0.1:3478?transport=tcp", "username": "u",
                                               "credential": "p"}]
    with TestClient(create_app(ServerConfig())) as client:
        assert client.get("/config").json()["ice_servers"] == []
    # flags replace the env list
    config = _config(parse(["serve", "--ice-server", "turns:127.0.0.1:5349", "--ice-server", "stun:127.0.0.1"]))
    assert config.ice_servers == ("turns:127.0.0.1:5349", "stun:127.0.0.1")
    with pytest.raises(ValueError, match="username and credential"):
        rtc_configuration(ServerConfig(ice_servers=("turn:127.0.0.1:3478",)))
    with pytest.raises(ValueError, match="bad ICE server URL"):
        rtc_configuration(ServerConfig(ice_servers=("http://127.0.0.1:3478",)))
    with pytest.raises(ValueError, match="bad ICE server URL"):
        create_app(ServerConfig(ice_servers=("stun:127.0.0.1:3478?transport=udp",)))  # fails at start-up


def test_serve_refuses_a_bad_ice_server(monkeypatch):
    from hand2world.cli import main

    monkeypatch.delenv("HAND2WORLD_ICE_CREDENTIAL", raising=False)
    assert main(["serve", "--port", "1", "--ice-server", "turn:127.0.0.1:3478"]) == 2  # before binding a port


class _StunServer(asyncio.DatagramProtocol):
    """A STUN binding responder on 127.0.0.1: answers with the sender's address (XOR-MAPPED-ADDRESS)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, int]] = []
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        from aioice import stun

        try:
            req = stun.parse_message(data)
        except ValueError:
            return
        if req.message_method != stun.Method.BINDING or req.message_class != stun.Class.REQUEST:
            return
        self.requests.append(addr)
        resp = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE,
                            transaction_id=req.transaction_id)
        resp.attributes["XOR-MAPPED-ADDRESS"] = addr[:2]
        resp.add_fingerprint()
        self.transport.sendto(bytes(resp), addr)


def test_server_peer_connection_uses_the_configured_stun_server():
    """A live WebRTC session with ``ice_servers=(stun:127.0.0.1:PORT,)``: the server queries that STUN
    server, puts the reflexive candidate in its answer, and the session streams frames."""
    from hand2world.server.app import create_app
    from hand2world.server.clients import LocalServer, WebRTCClient
    from hand2world.server.session import ServerConfig

    async def run():
        loop = asyncio.get_running_loop()
        transport, stun_server = await loop.create_datagram_endpoint(_StunServer, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            config = ServerConfig(ice_hosts=("127.0.0.1",), ice_servers=(f"stun:127.0.0.1:{port}",))
            async with LocalServer(create_app(config)) as url:
                client = await WebRTCClient().connect(url)
                client.send({"type": "hands", "t": 0.0, "hands": []})
                frames = await client.wait_frames(1, 15)
                answer = client.pc.remoteDescription.sdp
                await client.close()
        finally:
            transport.close()
        return stun_server.requests, answer, frames

    requests, answer, frames = asyncio.run(run())
    assert requests and all(host == "127.0.0.1" for host, _ in requests)
    assert "typ srflx" in answer and frames >= 1

