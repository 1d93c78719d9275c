"""The sandbox's program: runs model-written code and, when given tests, decides the verdict
(`python -I -S -B /.sandbox/sandbox_harness.py`; only the standard library).

It reads one JSON request from stdin and closes it: `code`, and optionally `tests`,
`strict` and two per-run secrets, `pass_token` and `value_token`. The code is written to /work/main.py (its own file holds
only its own code). Without tests the code is exec'd as a plain program. With tests:

- The tests are compiled before any model code runs, with asserts kept, and never touch
  the filesystem; they run in a namespace with the builtins, and with every module loaded
  before the code ran, as they were then.
- The code runs in a fresh `__main__` module; ending early (sys.exit, os._exit, an
  exception) means no verdict. An audit hook, installed before it runs and impossible to
  remove, refuses frame, traceback-frame, garbage-collector, tracing and ctypes access,
  and a seccomp filter refuses new signal handlers (a handler is called with the frame
  it interrupted), so neither the code nor the functions the tests call can reach the
  harness's state.
- Only after every test ran does the harness write the pass token (else `FAIL <reason>`)
  to the verdict pipe (fd `SANDBOX_VERDICT_FD`), then exits without running the code's
  exit handlers. The exit status counts for nothing, and the pass token is nowhere the
  code can read before the tests have passed (a code that redirects the pipe learns it
  only then).
- Strict mode: the caller sends the tests with every `assert EXPR == LITERAL` rewritten
  by `strict_checks` to `__report__(i, EXPR)`, which sends EXPR's value encoded by exact
  type (`canonical`); the caller compares with the literal it kept, so the expected
  values are not in this process at all and no `__eq__` can forge equality.
"""
import ast
import builtins
import os
import sys
import types

PLAIN_SCALARS = (int, float, complex, str, bytes, bool, type(None))
# Imported before the code runs, so that what the code does to them is undone before the tests.
PRELOADED = ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string", "operator",
             "fractions", "decimal", "statistics", "random", "typing", "copy", "json")


def canonical(value, depth=0):
    """`value` as nested lists of (type name, repr) by exact type; a value of any other type
    (a subclass, or an object with its own `__eq__`) raises TypeError."""
    if depth > 100:
        raise TypeError("value nested deeper than 100")
    kind = type(value)
    if kind in PLAIN_SCALARS:
        return [kind.__name__, repr(value)]
    if kind is list or kind is tuple:
        return [kind.__name__, [canonical(v, depth + 1) for v in value]]
    if kind is set or kind is frozenset:
        return [kind.__name__, sorted((canonical(v, depth + 1) for v in value), key=repr)]
    if kind is dict:
        pairs = [[canonical(k, depth + 1), canonical(v, depth + 1)] for k, v in value.items()]
        return ["dict", sorted(pairs, key=repr)]
    raise TypeError(f"strict tests compare only built-in values, not {kind.__name__}")


def strict_checks(tests):
    """The tests' module with each top-level `assert EXPR == LITERAL` (either side) replaced
    by `__report__(i, EXPR)`, and the literals in order. Any other assert, or an EXPR that
    uses a name the tests import (a module is shared with the code, which may have replaced
    its functions), is an error naming the line."""
    tree = ast.parse(tests, "<tests>")
    imported = {alias.asname or alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    expected = []
    for i, node in enumerate(tree.body):
        if not isinstance(node, ast.Assert):
            continue
        test = node.test
        if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
            raise ValueError(f"strict tests: line {node.lineno} is not `assert EXPR == LITERAL`")
        left, right = test.left, test.comparators[0]
        for expr, literal in ((left, right), (right, left)):
            try:
                expected.append(ast.literal_eval(literal))
                break
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
        else:
            raise ValueError(f"strict tests: line {node.lineno} compares with no literal")
        modules = sorted({n.id for n in ast.walk(expr) if isinstance(n, ast.Name) and n.id in imported})
        if modules:
            raise ValueError(f"strict tests: line {node.lineno} uses {', '.join(modules)}, which the code may have replaced")
        call = ast.Call(ast.Name("__report__", ast.Load()), [ast.Constant(len(expected) - 1), expr], [])
        tree.body[i] = ast.copy_location(ast.Expr(call), node)
    return ast.fix_missing_locations(tree), expected


# What the audit hook refuses once model code runs: every way to a frame (and so to the
# harness's locals), to arbitrary objects, to tracing, to raw memory, or to crafted bytecode.
BLOCKED_EVENTS = frozenset({
    "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile",
    "sys.addaudithook", "gc.get_objects", "gc.get_referrers", "gc.get_referents", "code.__new__",
    "marshal.loads", "marshal.load",  # crafted bytecode (imports compile from source: see _no_cached_bytecode)
})
BLOCKED_IMPORTS = frozenset({"ctypes", "_ctypes", "_testcapi", "_testinternalcapi", "_xxsubinterpreters",
                             "sandbox_seccomp", "gc"})  # gc: gc.garbage with DEBUG_SAVEALL hands out frames
BLOCKED_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})


def _install_guard(loaders):
    """Install the audit hook (for good). It is made here and held only by the interpreter,
    with everything it checks bound as immutable defaults, so nothing the code can reach
    changes what it refuses. It raises ValueError, which the standard library's
    frame-using helpers (namedtuple, enum, typing) already treat as "no frame available"."""

    def guard(event, args, blocked=BLOCKED_EVENTS, attributes=BLOCKED_ATTRIBUTES, imports=BLOCKED_IMPORTS,
              loaders=frozenset(loaders), rewrites=frozenset({"__code__"}),
              error=ValueError):
        if event in blocked or event.startswith("ctypes."):
            raise error(f"{event} is not allowed in the sandbox")
        if event == "object.__getattr__" and (args[1] in attributes or args[0] in loaders):
            raise error(f"{args[1]} is not allowed in the sandbox")
        if event == "object.__setattr__" and args[1] in rewrites:
            raise error(f"setting {args[1]} is not allowed in the sandbox")
        if event == "import" and args[0] in imports:
            raise error(f"import {args[0]} is not allowed in the sandbox")

    sys.addaudithook(guard)


def _no_new_signal_handlers():
    """From now on sigaction fails (EPERM) in this process and its children: a signal
    handler receives the frame it interrupted, which would be the harness's. The ctypes
    this needs is dropped from sys.modules; the audit hook refuses it from here on."""
    sys.path.insert(0, "/.sandbox")
    import sandbox_seccomp

    sandbox_seccomp.deny(["rt_sigaction"])
    for name in [name for name in sys.modules if name.startswith(("ctypes", "_ctypes", "sandbox_seccomp"))]:
        del sys.modules[name]
    sys.path.remove("/.sandbox")


LOADER_WRAPPERS = """
def create_builtin(spec, _create=_create_builtin, _blocked=_blocked, _ns=_ns):
    name = spec.name
    if type(name) is not str or name in _blocked:
        raise ImportError("module " + repr(name) + " is not allowed in the sandbox")
    return _create(_ns(name=name))


def create_dynamic(spec, file=None, _create=_create_dynamic, _blocked=_blocked, _ns=_ns):
    name, origin = spec.name, spec.origin
    if type(name) is not str or type(origin) is not str or name in _blocked:
        raise ImportError("module " + repr(name) + " is not allowed in the sandbox")
    return _create(_ns(name=name, origin=origin))
"""


def _guard_module_loaders():
    """`_imp.create_builtin` and `create_dynamic` make a module without an import event:
    put wrappers on them that refuse the blocked modules. Each wrapper passes on a
    namespace of its own making (the spec's class is the code's to change), keeps the
    original in a default the audit hook refuses to read, and lives in a globals dict of
    its own (a harness function's `__globals__` would hand the code the harness)."""
    import _imp

    scope = {"__builtins__": {"type": type, "str": str, "repr": repr, "ImportError": ImportError},
             "_create_builtin": _imp.create_builtin, "_create_dynamic": _imp.create_dynamic,
             "_blocked": BLOCKED_IMPORTS, "_ns": types.SimpleNamespace}
    exec(LOADER_WRAPPERS, scope)
    create_builtin, create_dynamic = scope["create_builtin"], scope["create_dynamic"]
    for name in ("_create_builtin", "_create_dynamic"):
        del scope[name]  # the originals stay only in the wrappers' defaults
    _imp.create_builtin, _imp.create_dynamic = create_builtin, create_dynamic
    return create_builtin, create_dynamic


def _read_request():
    chunks = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(0)
    import json

    return json.loads(b"".join(chunks))


def _run_tests(request):
    """Run the code, then the tests; return (passed, why not, the strict reports). `passed`
    is the constant True only on the path where the tests' code returned: nothing the code
    can reach or rewrite (a harness function's `__code__`, say) decides it."""
    code, tests = request["code"], request["tests"]
    compiled_tests = compile(tests, "<tests>", "exec", dont_inherit=True, optimize=0)  # strict: rewritten by the caller
    compiled_code = compile(code, "/work/main.py", "exec", dont_inherit=True, optimize=0)
    clean_builtins = dict(builtins.__dict__)
    for name in PRELOADED:
        __import__(name)
    modules = {m: dict(m.__dict__) for m in list(sys.modules.values()) if type(m) is types.ModuleType}
    reports = []
    encode, append, length = canonical, reports.append, len

    def report(index, value):
        if length(reports) != index:
            raise RuntimeError("strict checks out of order")
        append((index, encode(value)))

    module = types.ModuleType("__main__")
    module.__file__ = "/work/main.py"
    sys.modules["__main__"] = module
    _no_new_signal_handlers()
    sys.pycache_prefix = "/nonexistent-pycache"  # no cached bytecode: imports compile from source, marshal unused
    sys.modules.pop("gc", None)
    _install_guard(_guard_module_loaders())
    try:
        exec(compiled_code, module.__dict__)
    except BaseException as err:  # noqa: BLE001 - SystemExit included: the tests did not run
        return False, "code raised " + _name(err), reports
    for saved, contents in modules.items():  # the tests see the modules as they were before the code ran
        saved.__dict__.clear()
        saved.__dict__.update(contents)
    namespace = dict(module.__dict__)
    namespace["__builtins__"] = clean_builtins
    namespace["__report__"] = report
    try:
        exec(compiled_tests, namespace)
    except BaseException as err:  # noqa: BLE001
        return False, "tests raised " + _name(err), reports
    return True, "", reports


def _name(err):
    try:
        name = type(err).__name__
        return name if type(name) is str else "?"
    except BaseException:  # noqa: BLE001
        return "?"


def main():
    request = _read_request()
    with open("/work/main.py", "w") as f:
        f.write(request["code"])
    if request.get("tests") is None:
        python = sys.executable
        os.execv(python, [python, "-I", "-S", "-B", "main.py"])
    import json

    pass_token, value_token = request["pass_token"], request["value_token"]
    channel = int(os.environ["SANDBOX_VERDICT_FD"])
    os.set_inheritable(channel, False)
    write, dumps, exit_now, streams = os.write, json.dumps, os._exit, (sys.stdout, sys.stderr)
    try:
        passed, why, reports = _run_tests(request)
        del request
        lines = [f"{value_token} {i} {dumps(v)}" for i, v in reports]
        lines.append(pass_token if passed is True else "FAIL " + (why if type(why) is str else "?"))
    except BaseException as err:  # noqa: BLE001 - the harness itself failed: no verdict
        lines = [f"FAIL harness {_name(err)}"]
    data = ("\n".join(lines) + "\n").encode()
    while data:
        data = data[write(channel, data):]
    for stream in streams:  # what the code printed, for the logs; the verdict is already out
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    exit_now(0)


if __name__ == "__main__":
    main()
