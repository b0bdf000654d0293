"""`whatsapp-operator run ...`: the command line entry point."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import random
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import kopf
import yaml

from whatsapp_operator import __version__
from whatsapp_operator.config import ConfigError, OperatorConfig
from whatsapp_operator.heap import HeapFreezer
from whatsapp_operator.kube.client import KubeClient, KubeError, login_from_environment
from whatsapp_operator.kube.handlers import build_registry, configure_settings
from whatsapp_operator.kube.leadership import PeeringIdentity
from whatsapp_operator.redaction import install_log_filter

logger = logging.getLogger("whatsapp_operator")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="whatsapp-operator", description="Manage WhatsApp instances in Evolution API from Kubernetes."
    )
    parser.add_argument("--version", action="version", version=f"whatsapp-operator {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; globs allowed)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    run.add_argument("--standalone", action="store_true", help="no peering: do not coordinate with other replicas")
    run.add_argument(
        "--peering",
        default="whatsapp-operator",
        metavar="NAME",
        help="name of the ClusterKopfPeering shared by the replicas (default: whatsapp-operator)",
    )
    run.add_argument(
        "--priority",
        type=int,
        default=None,
        metavar="N",
        help="peering priority; the live replica with the highest one acts (default: random)",
    )
    run.add_argument(
        "--liveness", default=None, metavar="URL", help="serve health checks, e.g. http://0.0.0.0:8080/healthz"
    )
    run.add_argument("--install-crds", action="store_true", help="create the CRDs from crds/ when they are missing")
    run.add_argument(
        "--crds-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where --install-crds reads the CRDs (default: the image's copy, the source checkout's crds/, or ./crds)",
    )
    run.add_argument(
        "--event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="uvloop (default, when installed) or asyncio's own event loop",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    install_log_filter()
    for noisy in ("httpx", "httpcore", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kopf's two lines per handled object ("Handler ... succeeded.", "... is processed") repeat
    # what the operator's own log says once per transition; at 10,000 objects a restart wrote
    # 20,000 of them, about 4 % of its CPU (bench/README.md, "Fifth round"). Its warnings and
    # errors (a handler's failure, a retry) stay; --verbose shows everything.
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    # Every setting, and the Kubernetes credentials, are checked once here: a bad one is one line
    # on stderr and exit code 2, instead of a traceback or kopf retrying the login forever.
    try:
        config = OperatorConfig.from_env()
    except ConfigError as error:
        print(f"whatsapp-operator: {error}", file=sys.stderr)
        return 2
    try:
        login_from_environment()  # the login kopf and the status writer use; it loads, it does not connect
    except kopf.LoginError as error:
        print(f"whatsapp-operator: kubernetes credentials: {error}", file=sys.stderr)
        return 2
    if args.install_crds:
        try:
            asyncio.run(install_crds(args.crds_dir or default_crds_dir()))
        except (KubeError, kopf.LoginError, OSError) as error:
            print(f"whatsapp-operator: cannot install the CRDs: {error}", file=sys.stderr)
            return 1
    peering = None if args.standalone else peering_identity(args.peering, args.priority)
    if peering is not None and args.namespace:
        logger.warning(
            "Peering follows the ClusterKopfPeering %r; in --namespace mode run one replica or --standalone",
            args.peering,
        )
    registry = build_registry(config, peering=peering if not args.namespace else None, namespaces=args.namespace)
    freeze_heap_after_full_collections(registry)
    settings = kopf.OperatorSettings()
    configure_settings(settings)
    # Named, but not mandatory (kopf.run's peering_name would make it so): without the peering
    # CRDs, as on a developer's cluster, the operator runs alone instead of waiting for them.
    settings.peering.name = args.peering
    loop_factory = event_loop_factory(args.event_loop)
    logger.info("Running on %s's event loop", "asyncio" if loop_factory is None else "uvloop")
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        kopf.run(
            loop=runner.get_loop(),
            registry=registry,
            settings=settings,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=args.standalone,
            priority=peering.priority if peering else None,
            identity=peering.identity if peering else None,  # type: ignore[arg-type]  # kopf.Identity is a NewType of str
            liveness_endpoint=args.liveness,
        )
    return 0


def event_loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop (libuv, in C), as kopf's own command line picks when it is installed:
    the loop's own steps and socket reads were about a sixth of the operator's CPU on asyncio's
    loop (bench/README.md, "Fifth round"). asyncio's when asked for or when uvloop is missing."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            logger.warning("uvloop is not installed: running on asyncio's event loop")
        else:
            return uvloop.new_event_loop
    return None


def freeze_heap_after_full_collections(registry: kopf.OperatorRegistry) -> None:
    """This process only: full garbage collections walk what is new, not every instance (heap.py)."""
    tasks: list[asyncio.Task[None]] = []  # a reference, or the loop may drop the task

    @kopf.on.startup(registry=registry, id="heap-freezer")
    async def start_heap_freezer(**_: object) -> None:
        tasks.append(asyncio.get_running_loop().create_task(HeapFreezer().run(), name="heap freezer"))

    @kopf.on.cleanup(registry=registry, id="heap-freezer")
    async def stop_heap_freezer(**_: object) -> None:
        # kopf waits 5 s for tasks it did not start before it cancels them: end it here.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks.clear()


def peering_identity(name: str, priority: int | None = None) -> PeeringIdentity:
    """This process's entry in kopf's peering; replicas of one Deployment differ by pod and priority."""
    return PeeringIdentity(
        name=name,
        identity=os.environ.get("POD_ID") or f"{getpass.getuser()}@{socket.gethostname()}/{os.getpid()}",
        # kopf pauses every replica when priorities tie: each process draws its own.
        priority=priority if priority is not None else random.SystemRandom().randint(1, 1_000_000),
    )


def default_crds_dir() -> Path:
    """The copy installed with the package (container image), crds/ of a source checkout, or ./crds."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "crds", package_dir.parent.parent / "crds", Path.cwd() / "crds"):
        if candidate.is_dir():
            return candidate
    raise OSError("no crds/ directory found; pass --crds-dir, or apply them with kubectl apply -f crds/")


async def install_crds(directory: Path) -> None:
    kube = KubeClient()
    kube.use_credentials(login_from_environment())
    try:
        for path in sorted(directory.glob("*.yaml")):
            for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if not document or document.get("kind") != "CustomResourceDefinition":
                    continue
                name = document["metadata"]["name"]
                if await kube.get_crd(name) is None:
                    await kube.create_crd(document)
                    logger.info("Installed CRD %s", name)
                else:
                    logger.info("CRD %s is already installed", name)
    finally:
        await kube.aclose()
