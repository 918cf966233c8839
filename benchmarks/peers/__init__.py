"""The peers asyncq is measured against, each driven by a module of this package.

Importing this package imports no peer: the runner (in asyncq's environment)
reads ``PEERS`` and starts each driver with the python of the peers' own
virtualenv, made by ``python -m benchmarks.peers setup``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent
VENV = BENCHMARKS / ".venv-peers"
REQUIREMENTS = BENCHMARKS / "requirements-peers.txt"


@dataclass(frozen=True)
class PeerInfo:
    module: str
    backends: tuple[str, ...]
    #: the peer this is a configuration of, when it has more than one (the
    #: runner's tables compare asyncq with each peer's best configuration)
    family: str = ""

    def peer(self, system: str) -> str:
        return self.family or system


PEERS: dict[str, PeerInfo] = {
    "arq": PeerInfo("benchmarks.peers.arq_driver", ("redis",)),
    "saq": PeerInfo("benchmarks.peers.saq_driver", ("redis", "postgres")),
    "taskiq": PeerInfo("benchmarks.peers.taskiq_driver", ("redis",)),
    "streaq": PeerInfo("benchmarks.peers.streaq_driver", ("redis",)),
    "dramatiq": PeerInfo("benchmarks.peers.dramatiq_driver", ("redis",)),
    "dramatiq-async": PeerInfo(
        "benchmarks.peers.dramatiq_async_driver", ("redis",), family="dramatiq"
    ),
    "celery": PeerInfo("benchmarks.peers.celery_driver", ("redis",)),
    "rq": PeerInfo("benchmarks.peers.rq_driver", ("redis",)),
    "huey": PeerInfo("benchmarks.peers.huey_driver", ("redis",)),
    "procrastinate": PeerInfo("benchmarks.peers.procrastinate_driver", ("postgres",)),
    "pgqueuer": PeerInfo("benchmarks.peers.pgqueuer_driver", ("postgres",)),
}


def venv_python() -> Path:
    return VENV / "bin" / "python"
