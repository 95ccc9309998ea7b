"""Corral's Python interpreter context: a small kernel run as a background
process inside a sandbox (see `routes/contexts.rs`).

The server starts `python3 -u -c BOOTSTRAP <size> corral-context <id> python`;
the bootstrap reads exactly <size> bytes of this file from standard input and
runs it. From then on standard input carries one JSON request per line,
`{"nonce": "...", "code": "..."}`, and for each the kernel writes one line

    \x1ecorral-result <nonce> <json>\n

to its original standard output, which the agent keeps in the process's log.
`<nonce>` is fresh and random per request and never shown to the code, and
while the code runs descriptors 1 and 2 point at pipes the kernel reads (so
`print`, `os.write(1, ...)` and child processes are all captured, and none of
them reaches the log): code that prints a result line cannot fake one.
Code runs in the kernel's own process, so code that goes looking (the
kernel's frames, `/proc/self/fd`) can still find the result descriptor and
the nonce of its own run; it can then only mislead the caller who sent it.

At start-up the kernel writes `\x1ecorral-result ready {...}`. A request that
arrives while another runs is answered `{"busy": true}` at once, so the code
running is always the one the server's SIGINT (its timeout) is meant for.
"""

import ast
import base64
import builtins
import io
import json
import linecache
import os
import queue
import signal
import sys
import threading
import traceback
import types
import warnings

MARK = "\x1ecorral-result"
# Kept of each of stdout and stderr per run.
MAX_STREAM = 256 * 1024
# Kept of one text representation.
MAX_TEXT = 64 * 1024
# Past this a result line loses its images (the agent keeps 1 MiB of log).
MAX_LINE = 768 * 1024

REPRS = (
    ("_repr_html_", "text/html"),
    ("_repr_markdown_", "text/markdown"),
    ("_repr_latex_", "text/latex"),
    ("_repr_svg_", "image/svg+xml"),
    ("_repr_png_", "image/png"),
    ("_repr_jpeg_", "image/jpeg"),
)


class Kernel:
    def __init__(self):
        # Debian's matplotlib looks for /etc/matplotlibrc, which the host
        # image does not bind; its copy under /usr does the same.
        debian_rc = "/usr/share/matplotlib/mpl-data/matplotlibrc"
        if "MATPLOTLIBRC" not in os.environ and not os.path.exists("/etc/matplotlibrc"):
            if os.path.exists(debian_rc):
                os.environ["MATPLOTLIBRC"] = debian_rc
        self.requests_fd = os.dup(0)
        self.results_fd = os.dup(1)
        self.saved = {1: os.dup(1), 2: os.dup(2)}
        # The code reads an empty standard input, never the requests.
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.busy = False
        self.executing = False
        self.interrupt_pending = False
        self.inbox = queue.Queue()
        self.count = 0
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = main
        self.namespace = main.__dict__
        sys.argv = [""]
        signal.signal(signal.SIGINT, self.on_interrupt)
        # With the Agg backend `plt.show()` only warns; figures are sent
        # after every run instead.
        warnings.filterwarnings(
            "ignore",
            message=r".*(non-GUI backend|non-interactive, and thus cannot be shown)",
        )

    def on_interrupt(self, signum, frame):
        if self.executing:
            raise KeyboardInterrupt
        if self.busy:
            # Arrived before the code started: it starts interrupted.
            self.interrupt_pending = True

    def emit(self, nonce, reply):
        line = "%s %s %s\n" % (MARK, nonce, json.dumps(reply, ensure_ascii=True))
        data = line.encode("ascii")
        with self.write_lock:
            while data:
                written = os.write(self.results_fd, data)
                data = data[written:]

    def read_requests(self):
        with os.fdopen(self.requests_fd, "rb") as requests:
            for line in requests:
                try:
                    request = json.loads(line)
                    nonce = str(request["nonce"])
                except (ValueError, KeyError, TypeError):
                    continue
                with self.lock:
                    if self.busy:
                        self.emit(nonce, {"busy": True})
                        continue
                    self.busy = True
                    self.interrupt_pending = False
                self.inbox.put(request)
        self.inbox.put(None)

    def serve(self):
        threading.Thread(target=self.read_requests, daemon=True).start()
        self.emit("ready", {"language": "python", "version": sys.version.split()[0]})
        while True:
            request = self.inbox.get()
            if request is None:
                return
            reply = self.run(str(request.get("code", "")))
            with self.lock:
                self.emit(str(request["nonce"]), reply)
                self.busy = False

    def run(self, code):
        self.count += 1
        filename = "<cell-%d>" % self.count
        # So tracebacks can show the lines of the code.
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        out, err = Capture(1, self.saved[1]), Capture(2, self.saved[2])
        error = None
        results = []
        try:
            value = self.execute(code, filename)
            if value is not None:
                self.namespace["_"] = value
                results.append(represent(value))
        except BaseException as caught:  # the code's SystemExit and ^C too
            error = describe(caught)
        try:
            results.extend(figures())
        except Exception as caught:
            sys.stderr.write("corral: could not render figures: %r\n" % (caught,))
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        reply = {
            "stdout": out.finish(),
            "stderr": err.finish(),
            "error": error,
            "results": results,
            "execution_count": self.count,
        }
        return fit(reply)

    def execute(self, code, filename):
        tree = ast.parse(code, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        body = compile(tree, filename, "exec", dont_inherit=True)
        tail = compile(last, filename, "eval", dont_inherit=True) if last else None
        self.executing = True
        try:
            if self.interrupt_pending:
                raise KeyboardInterrupt
            exec(body, self.namespace)
            return eval(tail, self.namespace) if tail is not None else None
        finally:
            self.executing = False


class Capture:
    """Descriptor 1 or 2 pointed at a pipe for one run, drained by a thread
    into a bounded buffer (so output never blocks the code)."""

    def __init__(self, fd, saved):
        self.fd = fd
        self.saved = saved
        self.kept = bytearray()
        self.dropped = 0
        stream = sys.stdout if fd == 1 else sys.stderr
        try:
            stream.flush()
        except Exception:
            pass
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        self.read_end = read_end
        self.thread = threading.Thread(target=self.drain, daemon=True)
        self.thread.start()

    def drain(self):
        try:
            while True:
                chunk = os.read(self.read_end, 65536)
                if not chunk:
                    return
                room = max(0, MAX_STREAM - len(self.kept))
                self.kept += chunk[:room]
                self.dropped += len(chunk) - min(room, len(chunk))
        finally:
            os.close(self.read_end)

    def finish(self):
        # Closes the pipe's write end at `fd`; a child the code left running
        # may still hold it, so do not wait for the end of it for long.
        os.dup2(self.saved, self.fd)
        self.thread.join(0.5)
        text = bytes(self.kept).decode("utf-8", "replace")
        if self.dropped:
            text += "\n[corral: %d more bytes not kept]\n" % self.dropped
        return text


def clip(text):
    if len(text) > MAX_TEXT:
        return text[:MAX_TEXT] + "\n[corral: %d more characters not kept]" % (
            len(text) - MAX_TEXT
        )
    return text


def represent(value):
    bundle = {"text/plain": clip(repr(value))}
    for method, mime in REPRS:
        try:
            render = getattr(value, method, None)
            if not callable(render):
                continue
            data = render()
        except Exception:
            continue
        if isinstance(data, tuple) and data:
            data = data[0]
        if isinstance(data, bytes):
            bundle[mime] = base64.b64encode(data).decode("ascii")
        elif isinstance(data, str):
            bundle[mime] = clip(data)
    return bundle


def describe(caught):
    trace = caught.__traceback__
    # Only the code's own frames, not the kernel's.
    while trace is not None and not trace.tb_frame.f_code.co_filename.startswith("<cell-"):
        trace = trace.tb_next
    if isinstance(caught, SyntaxError):
        lines = traceback.format_exception_only(type(caught), caught)
    else:
        report = traceback.TracebackException(type(caught), caught, trace)
        # A ^C lands in the kernel's signal handler: not the code's frame.
        report.stack = traceback.StackSummary.from_list(
            [frame for frame in report.stack if frame.filename != "<corral-kernel>"]
        )
        lines = report.format()
    return {
        "name": type(caught).__name__,
        "value": clip(str(caught)),
        "traceback": clip("".join(lines)),
    }


def figures():
    """Every open matplotlib figure as a PNG, then closed (only if the code
    imported pyplot: the kernel never imports matplotlib itself)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return []
    found = []
    try:
        for number in pyplot.get_fignums():
            figure = pyplot.figure(number)
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", bbox_inches="tight")
            found.append(
                {
                    "text/plain": repr(figure),
                    "image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
                }
            )
    finally:
        pyplot.close("all")
    return found


def fit(reply):
    """Keeps the result line within what the log holds: images go first,
    then the streams shrink."""
    if len(json.dumps(reply)) <= MAX_LINE:
        return reply
    for bundle in reply["results"]:
        for mime in [m for m in bundle if m.startswith("image/")]:
            del bundle[mime]
            bundle["text/plain"] = bundle.get("text/plain", "") + " [corral: image not kept: too large]"
    for stream in ("stdout", "stderr"):
        if len(json.dumps(reply)) > MAX_LINE:
            reply[stream] = reply[stream][: MAX_STREAM // 4] + "\n[corral: output cut to fit]\n"
    return reply


Kernel().serve()
