"""A real ipykernel driven over jupyter_client: run cells and time them, click widgets the way a
browser does. Shared by tests/test_kernel_responsive.py and benchmarks/bench_kernel.py."""

from __future__ import annotations

import ast
import time

import jupyter_client


class Kernel:
    def __init__(self, env: dict[str, str], cwd: str | None = None) -> None:
        self.km = jupyter_client.KernelManager(kernel_name="python3")
        self.km.start_kernel(env=env, cwd=cwd, extra_arguments=["--HistoryManager.enabled=False"])
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 60) -> tuple[float, str]:
        """Execute a cell; return (round-trip seconds, text of its result / stdout). Raises on error."""
        out: list[str] = []
        errors: list[str] = []

        def hook(msg: dict) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "execute_result":
                out.append(content["data"].get("text/plain", ""))
            elif kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                errors.append(f"{content['ename']}: {content['evalue']}")

        t0 = time.perf_counter()
        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook, allow_stdin=False)
        elapsed = time.perf_counter() - t0
        if errors or reply["content"]["status"] != "ok":
            raise AssertionError(f"cell failed: {code!r}: {errors or reply['content']}")
        return elapsed, "".join(out).strip()

    def value(self, expr: str):
        return ast.literal_eval(self.run(expr)[1])

    def click(self, model_id: str) -> None:
        """What a browser sends when a Button is clicked."""
        msg = self.kc.session.msg("comm_msg", {"comm_id": model_id,
                                               "data": {"method": "custom", "content": {"event": "click"}}})
        self.kc.shell_channel.send(msg)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
