"""Network tool launched in container: a driftwatch detection in Python.

Built into a WebAssembly component with componentize-py against the same
WIT world as the Rust plugins (sdk/wit/plugin.wit); see README.md.
"""

import driftwatch_plugin as dw
import wit_world
from componentize_py_types import Err
from wit_world.imports import host

NAME = "network-tool"
VERSION = "0.1.0"
RULE = "Network tool launched in container"
DEFAULT_TOOLS = ("nc", "ncat", "netcat", "nmap", "socat", "tcpdump")
OUTPUT = (
    "Network tool launched in container (user=%user.name command=%proc.cmdline "
    "container=%container.name image=%container.image.repository)"
)
KNOWN_KEYS = {"tools", "priority"}


class NetworkTool(dw.Plugin):
    def __init__(self):
        self.tools = frozenset(DEFAULT_TOOLS)
        self.priority = "notice"

    def configure(self, config):
        unknown = sorted(set(config) - KNOWN_KEYS)
        if unknown:
            raise ValueError(
                "unknown config key(s) %s; known: %s"
                % (", ".join(map(str, unknown)), ", ".join(sorted(KNOWN_KEYS)))
            )
        tools = config.get("tools", DEFAULT_TOOLS)
        if not isinstance(tools, (list, tuple)) or not all(
            isinstance(t, str) and t for t in tools
        ):
            raise ValueError("tools must be a list of non-empty process names")
        priority = config.get("priority", "notice")
        if priority not in dw.PRIORITIES:
            raise ValueError(
                "priority %r is not one of %s" % (priority, ", ".join(dw.PRIORITIES))
            )
        self.tools = frozenset(tools)
        self.priority = priority
        return dw.manifest(
            NAME,
            VERSION,
            ["exec"],
            description="Network tools (nc, nmap, socat, tcpdump...) run in a container",
            # Only container execs of a listed tool cross into the sandbox;
            # process() still checks both itself.
            prefilter=[dw.in_container(), dw.is_in("proc.name", sorted(self.tools))],
        )

    def process(self, event):
        if event.get("kind") != "exec" or event.get("container") is None:
            return None
        name = (event.get("process") or {}).get("name")
        if name not in self.tools:
            return None
        output, fields = dw.render(OUTPUT, event)
        return {
            "findings": [
                dw.finding(
                    RULE,
                    self.priority,
                    output,
                    fields=fields,
                    tags=["container", "network", "mitre_discovery"],
                )
            ],
            "tags": ["network-tool"],
        }


_PLUGIN = NetworkTool()


class WitWorld(wit_world.WitWorld):
    def init(self, config: bytes) -> bytes:
        try:
            manifest = _PLUGIN.serve_init(config)
        except (ValueError, dw.DecodeError) as e:
            raise Err(str(e))
        host.log(host.Level.DEBUG, "watching for %s" % ", ".join(sorted(_PLUGIN.tools)))
        return manifest

    def process_batch(self, events: bytes) -> bytes:
        try:
            return _PLUGIN.serve_batch(events)
        except (ValueError, dw.DecodeError) as e:
            raise Err("bad batch: %s" % e)
