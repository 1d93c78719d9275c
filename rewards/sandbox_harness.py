"""The sandbox's program: runs model-written code and, when given tests, decides the verdict
(`python -I -S -B /.sandbox/sandbox_harness.py`; only the standard library).

It reads one JSON request from stdin and closes it: `code`, and optionally `tests`,
`strict` and two per-run secrets, `pass_token` and `value_token`. The code is written to /work/main.py (its own file holds
only its own code). Without tests the code is exec'd as a plain program. With tests:

- The tests are compiled before any model code runs, with asserts kept, and never touch
  the filesystem. Between the code and the tests the harness puts back every module
  loaded before the code ran (namespaces, builtins' first, through references taken
  before; a module's class; their classes' attributes, bases and metaclass), the
  sys.modules mapping, the import system's lists and cache, `re`'s cache, `decimal`'s
  context and `random`'s shared instance; after the code ran it looks up no builtin or
  global name. The tests run in a namespace of the code's globals minus any named like a
  builtin or like a name the tests import.
- The code runs in a fresh module named `solution` (also `sys.modules["__main__"]`, so an
  `if __name__ == "__main__":` block is skipped); ending early (sys.exit, os._exit, an
  exception) means no verdict. An audit hook, installed before it runs and impossible to
  remove, refuses frame, traceback-frame, garbage-collector, tracing and ctypes access;
  `_imp`'s loaders make only allowed modules (extension modules by the last component of
  their name and their file in lib-dynload); a seccomp filter refuses new signal
  handlers (a handler is called with the frame it interrupted) and new threads (one
  could change what the tests see after it was put back), so neither the code nor the
  functions the tests call can reach the harness's state. These in-process checks are
  defense in depth: strict mode's verdict does not rest on them.
- Only after every test ran does the harness write the pass token (else `FAIL <reason>`)
  to the verdict pipe (fd `SANDBOX_VERDICT_FD`), then exits without running the code's
  exit handlers. The exit status counts for nothing, and the pass token is nowhere the
  code can read before the tests have passed (a code that redirects the pipe learns it
  only then).
- Strict mode: the tests are imports and top-level `assert EXPR == LITERAL`, EXPR
  checking nothing itself (`strict_checks` refuses any other), and the caller sends the tests with each one rewritten
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


def canonical(value, depth=0, type=type, repr=repr, sorted=sorted, list=list, tuple=tuple, set=set,
              frozenset=frozenset, dict=dict, scalars=PLAIN_SCALARS, error=TypeError):
    """`value` as nested lists of (type name, repr) by exact type; a value of any other type
    (a subclass, or an object with its own `__eq__`) raises TypeError. In the sandbox it runs
    while the tests run, after functions of the code that may have replaced builtins: every
    builtin it uses is bound in its defaults."""
    if depth > 100:
        raise error("value nested deeper than 100")
    kind = type(value)
    for scalar in scalars:  # by identity: `kind in scalars` would ask kind's metaclass's `__eq__`
        if kind is scalar:
            return [kind.__name__, repr(value)]
    if kind is list or kind is tuple:
        return [kind.__name__, [canonical(v, depth + 1) for v in value]]
    if kind is set or kind is frozenset:
        return [kind.__name__, sorted((canonical(v, depth + 1) for v in value), key=repr)]
    if kind is dict:
        pairs = [[canonical(k, depth + 1), canonical(v, depth + 1)] for k, v in value.items()]
        return ["dict", sorted(pairs, key=repr)]
    raise error(f"strict tests compare only built-in values, not {kind.__name__}")


def strict_checks(tests):
    """The tests' module with each top-level `assert EXPR == LITERAL` (either side) replaced
    by `__report__(i, EXPR)`, and the literals in order. Any other assert (another form, or
    any assert inside a loop, an `if`, a function, a `with` or a `try`, which would reach the
    sandbox with its literal and compare with `==`), tests with no such assert at all, or an
    EXPR that uses a name the tests import (a module is shared with the code, which may have
    replaced its functions), an EXPR that checks something itself (a comparison, `and`/`or`,
    `not`, a conditional, a lambda, `isinstance` and other truth-valued builtins: the code's
    objects would decide it in the sandbox), or any statement but imports and these asserts
    (a helper, an assignment, `if ...: raise`), is an error naming the line."""
    tree = ast.parse(tests, "<tests>")
    top_level = {id(node) for node in tree.body if isinstance(node, ast.Assert)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert) and id(node) not in top_level:
            raise ValueError(f"strict tests: line {node.lineno} is an assert inside another statement; "
                             "strict asserts must be top-level `assert EXPR == LITERAL`")
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
        _refuse_checks_inside(expr, node.lineno)
        call = ast.Call(ast.Name("__report__", ast.Load()), [ast.Constant(len(expected) - 1), expr], [])
        tree.body[i] = ast.copy_location(ast.Expr(call), node)
        tree.body[i]._strict_report = True
    if not expected:
        raise ValueError("strict tests: no top-level `assert EXPR == LITERAL`; they would pass any program")
    for node in tree.body:
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr)) or (
                isinstance(node, ast.Expr) and not _is_report(node)):
            raise ValueError(f"strict tests: line {node.lineno} is a {type(node).__name__} statement; strict tests "
                             "hold only imports and top-level `assert EXPR == LITERAL` (a check of any other kind "
                             "would run in the sandbox, where the code's objects decide it)")
    return ast.fix_missing_locations(tree), expected


# Inside EXPR: whatever decides a truth value in the sandbox, where the code's objects (their
# `__eq__`, `__lt__`, `__bool__`, `__class__`) answer; `(f(x) == 5) == True` is an honest bool
# the code forged. Strict EXPR computes a value; only the caller compares it.
TRUTH_NODES = (ast.Compare, ast.BoolOp, ast.IfExp, ast.Lambda)
TRUTH_CALLS = frozenset({"isinstance", "issubclass", "bool", "callable", "hasattr", "type", "id", "hash", "all", "any"})


def _refuse_checks_inside(expr, lineno):
    for n in ast.walk(expr):
        if isinstance(n, TRUTH_NODES) or (isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not)):
            raise ValueError(f"strict tests: line {lineno} has a {type(n).__name__} inside EXPR; strict asserts "
                             "are `assert EXPR == LITERAL` where EXPR computes a value and compares nothing")
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in TRUTH_CALLS:
            raise ValueError(f"strict tests: line {lineno} calls {n.func.id}() inside EXPR; strict asserts are "
                             "`assert EXPR == LITERAL` where EXPR computes a value and checks nothing")


def _is_report(node):
    """Whether `node` is one of strict_checks' own `__report__(i, EXPR)` statements."""
    call = node.value
    return isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "__report__" and (
        getattr(node, "_strict_report", False))


# What the audit hook refuses once model code runs: every way to a frame (and so to the
# harness's locals), to arbitrary objects, to tracing, to raw memory, or to crafted bytecode.
BLOCKED_EVENTS = frozenset({
    "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile",
    "sys.addaudithook", "gc.get_objects", "gc.get_referrers", "gc.get_referents", "code.__new__",
    "marshal.loads", "marshal.load",  # crafted bytecode (imports compile from source: see _no_cached_bytecode)
    "sqlite3.enable_load_extension", "sqlite3.load_extension",  # native code
})
BLOCKED_IMPORTS = frozenset({"ctypes", "_ctypes", "_testcapi", "_testinternalcapi", "_xxsubinterpreters",
                             "sandbox_seccomp", "gc"})  # gc: gc.garbage with DEBUG_SAVEALL hands out frames
BLOCKED_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
# Compiled-in modules `_imp.create_builtin` will not make (again): a fresh `_imp` holds the
# unwrapped loaders, `gc` hands out frames, `sys`/`builtins` copies hold the originals.
BLOCKED_BUILTINS = frozenset({"_imp", "gc", "sys", "builtins", "xxsubtype", "_xxsubinterpreters", "_testcapi",
                              "_testinternalcapi", "_ctypes"})
# Extension modules (shared objects) the code may load, by the name of their init function
# (the last component of the module's name), and only from the interpreter's lib-dynload.
# Absent: _ctypes (raw memory), _test*, _xx* (a subinterpreter has no audit hook), _lsprof
# (profiling), curses, readline, tkinter and the like.
ALLOWED_EXTENSIONS = frozenset({
    "_asyncio", "_bisect", "_blake2", "_bz2", "_codecs_cn", "_codecs_hk", "_codecs_iso2022", "_codecs_jp",
    "_codecs_kr", "_codecs_tw", "_contextvars", "_csv", "_datetime", "_decimal", "_elementtree", "_hashlib",
    "_heapq", "_json", "_lzma", "_md5", "_multibytecodec", "_multiprocessing", "_opcode", "_pickle",
    "_posixshmem", "_posixsubprocess", "_queue", "_random", "_sha1", "_sha256", "_sha3", "_sha512", "_socket",
    "_sqlite3", "_ssl", "_statistics", "_struct", "_typing", "_uuid", "_zoneinfo", "array", "binascii", "cmath",
    "fcntl", "grp", "math", "mmap", "pyexpat", "resource", "select", "termios", "unicodedata", "zlib",
})


def _install_guard(loaders):
    """Install the audit hook (for good). It is made here and held only by the interpreter,
    with everything it checks bound as immutable defaults, so nothing the code can reach
    changes what it refuses. It raises ValueError, which the standard library's
    frame-using helpers (namedtuple, enum, typing) already treat as "no frame available".
    The module loaders' attributes (their defaults hold the unwrapped originals) can be
    neither read nor changed."""
    first, second = loaders

    def guard(event, args, blocked=BLOCKED_EVENTS, attributes=BLOCKED_ATTRIBUTES, imports=BLOCKED_IMPORTS,
              first=first, second=second, rewrites=frozenset({"__code__"}), text=str.__str__,
              error=ValueError):
        if event in blocked or event.startswith("ctypes."):
            raise error(f"{event} is not allowed in the sandbox")
        if event == "object.__getattr__" and (args[0] is first or args[0] is second or args[1] in attributes):
            raise error(f"{args[1]} is not allowed in the sandbox")
        if event in ("object.__setattr__", "object.__delattr__") and (
                args[0] is first or args[0] is second or args[1] in rewrites):
            raise error(f"setting {args[1]} is not allowed in the sandbox")
        if event == "import":
            name = text(args[0])  # an exact str: a subclass's own hash or split cannot hide a name
            if name in imports or name.rpartition(".")[2] in imports:
                raise error(f"import {name} is not allowed in the sandbox")

    sys.addaudithook(guard)


def _restrict_process():
    """From now on sigaction fails (EPERM) in this process and its children: a signal
    handler receives the frame it interrupted, which would be the harness's. So does
    making a thread (clone with CLONE_THREAD): a thread could change what the tests see
    after the harness restored it, or while they run. The ctypes this needs is dropped from
    sys.modules; the audit hook and the module loaders refuse it from here on."""
    sys.path.insert(0, "/.sandbox")
    import sandbox_seccomp

    sandbox_seccomp.deny(["rt_sigaction", "clone_threads"])
    for name in [name for name in sys.modules if name.startswith(("ctypes", "_ctypes", "sandbox_seccomp"))]:
        del sys.modules[name]
    sys.path.remove("/.sandbox")


# The wrappers look up no global or builtin name (all they use is in their defaults, which
# the audit hook keeps from being read or replaced), so their globals dict, which the code
# can reach through `__globals__`, decides nothing; it holds only the real builtins (an
# extension module's init imports through it), and is put back before the tests run.
LOADER_WRAPPERS = """
def create_builtin(spec, _create=_create_builtin, _allowed=_builtins, _ns=_ns, _type=type, _str=str,
                   _error=ImportError):
    name = spec.name
    if _type(name) is not _str or name not in _allowed:
        raise _error("this built-in module is not allowed in the sandbox")
    return _create(_ns(name=name))


def create_dynamic(spec, file=None, _create=_create_dynamic, _paths=_extensions, _ns=_ns, _type=type, _str=str,
                   _error=ImportError):
    name, origin = spec.name, spec.origin
    if _type(name) is not _str or _type(origin) is not _str:
        raise _error("this extension module is not allowed in the sandbox")
    path = _paths.get(name.rpartition(".")[2])
    if path is None or origin != path:
        raise _error("extension module " + name + " from " + origin + " is not allowed in the sandbox")
    return _create(_ns(name=name, origin=path))
"""


def _allowed_extensions():
    """{init name: path} of the allowed extension modules in this interpreter's lib-dynload."""
    import importlib.machinery

    paths = {}
    for directory in [entry for entry in sys.path if entry.endswith("/lib-dynload")][:1]:
        for filename in os.listdir(directory):
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                if filename.endswith(suffix) and filename[: -len(suffix)] in ALLOWED_EXTENSIONS:
                    paths.setdefault(filename[: -len(suffix)], directory + "/" + filename)
    return paths


def _guard_module_loaders():
    """`_imp.create_builtin` and `create_dynamic` make a module without an import event:
    put wrappers on them that allow only the listed modules. An extension module is checked
    by its last name component (CPython calls `PyInit_<last component>`) and its file,
    which must be the allowed one in lib-dynload. Each wrapper passes on a namespace of its
    own making (the spec's class is the code's to change) and keeps the original in a
    default the audit hook refuses to read. Returns the wrappers and their globals dict."""
    import _imp

    scope = {"__builtins__": builtins, "_create_builtin": _imp.create_builtin,
             "_create_dynamic": _imp.create_dynamic, "_ns": types.SimpleNamespace, "_extensions": _allowed_extensions(),
             "_builtins": frozenset(sys.builtin_module_names) - BLOCKED_BUILTINS}
    exec(LOADER_WRAPPERS, scope)
    create_builtin, create_dynamic = scope["create_builtin"], scope["create_dynamic"]
    scope.clear()  # the originals stay only in the wrappers' defaults
    scope["__builtins__"] = builtins
    _imp.create_builtin, _imp.create_dynamic = create_builtin, create_dynamic
    return (create_builtin, create_dynamic), scope


def _snapshot(extra_dicts, main):
    """What the code may change that the tests use, taken before it runs: every loaded
    module's namespace (but `main`'s, the code's own) by a reference to the dict itself
    (restore never reads `module.__dict__`, which the module's class could answer), the
    attributes, bases and metaclass of the classes they define (read through `type`'s own
    descriptors, not the class's), the sys.modules mapping, the import system's lists and
    cache, `extra_dicts`, and a few pieces of state the preloaded modules keep in place:
    `re`'s cache, `decimal`'s current context, `random`'s shared instance."""
    class_dict, bases_of = type.__dict__["__dict__"].__get__, type.__dict__["__bases__"].__get__
    modules = [m for m in list(sys.modules.values()) if type(m) is types.ModuleType and m is not main]
    modules.sort(key=lambda m: m is not builtins)  # builtins first: restore needs no other to be right
    seen, classes = set(), []
    for module in modules:
        for value in list(module.__dict__.values()):
            if isinstance(value, type) and value.__flags__ & 512 and id(value) not in seen:  # a heap type
                seen.add(id(value))
                classes.append((value, class_dict(value), dict(class_dict(value)), bases_of(value), type(value)))
    state = {
        "modules": [(m, m.__dict__, dict(m.__dict__)) for m in modules],
        "classes": classes,
        "dicts": [(d, dict(d)) for d in extra_dicts] + [(sys.modules, dict(sys.modules)),
                                                        (sys.path_importer_cache, dict(sys.path_importer_cache))],
        "lists": [(lst, list(lst)) for lst in (sys.meta_path, sys.path_hooks, sys.path)],
        "calls": [],
    }
    if "re" in sys.modules:
        state["calls"].append((sys.modules["re"].purge, ()))
    if "decimal" in sys.modules:
        decimal = sys.modules["decimal"]
        state["calls"].append((decimal.setcontext, (decimal.Context(),)))
    random = sys.modules.get("random")
    if random is not None and type(getattr(random, "_inst", None)) is random.Random:
        inst = random._inst
        state["random"] = (inst, random.Random, dict(object.__getattribute__(inst, "__dict__")),
                           random.Random.setstate, inst.getstate())
    return state


def _restore(state, clear=dict.clear, update=dict.update, copy=dict.copy, setattribute=type.__setattr__,
             delattribute=type.__delattr__, missing=object(), set_object=object.__setattr__, type=type,
             module_type=types.ModuleType, error=BaseException, bases_of=type.__dict__["__bases__"].__get__):
    """Put back what `_snapshot` saw, by contents (the code may have changed the objects in
    place, or bound new ones). Returns False where a class could not be put back.

    Runs after the code: it looks up no global or builtin name (all it uses is bound in its
    defaults, made when the harness was loaded, or in `state`), and it puts back builtins'
    namespace first, through the dict reference taken before the code ran."""
    for module, namespace, contents in state["modules"]:
        clear(namespace)
        update(namespace, contents)
        if type(module) is not module_type:  # a module whose class the code swapped
            set_object(module, "__class__", module_type)
    for target, contents in state["dicts"]:
        clear(target)
        update(target, contents)
    for target, contents in state["lists"]:
        target[:] = contents
    restored = True
    for cls, current, contents, bases, meta in state["classes"]:
        try:
            if type(cls) is not meta:
                setattribute(cls, "__class__", meta)
            if bases_of(cls) is not bases:
                setattribute(cls, "__bases__", bases)  # also recomputes the MRO
            for name in [name for name in current if name not in contents]:
                delattribute(cls, name)
            for name, value in contents.items():
                if current.get(name, missing) is not value:
                    setattribute(cls, name, value)
        except error:  # noqa: BLE001
            restored = False
    try:
        if "random" in state:
            inst, cls, contents, setstate, random_state = state["random"]
            if type(inst) is not cls:
                set_object(inst, "__class__", cls)
            set_object(inst, "__dict__", copy(contents))
            setstate(inst, random_state)
        for function, args in state["calls"]:  # re.purge, decimal.setcontext: their modules are back
            if args:
                function(args[0].copy())
            else:
                function()
    except error:  # noqa: BLE001
        restored = False
    return restored


def _imported_names(tests):
    """The names the tests bind by importing."""
    import ast as syntax

    return {alias.asname or alias.name.split(".")[0] for node in syntax.walk(syntax.parse(tests, "<tests>"))
            if isinstance(node, (syntax.Import, syntax.ImportFrom)) for alias in node.names}


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
    can reach or rewrite (a harness function's `__code__`, say) decides it.

    The tests run in a namespace of their own: the code's globals, except any whose name is
    a builtin's (`abs = lambda x: 0` would answer the tests' `abs`) or one the tests import,
    with the builtins as they were before the code ran."""
    import _thread

    code, tests = request["code"], request["tests"]
    compiled_tests = compile(tests, "<tests>", "exec", dont_inherit=True, optimize=0)  # strict: rewritten by the caller
    compiled_code = compile(code, "/work/main.py", "exec", dont_inherit=True, optimize=0)
    imported = _imported_names(tests)
    clean_builtins = dict(builtins.__dict__)
    for name in PRELOADED:
        __import__(name)
    reports = []
    encode, append, length, threads = canonical, reports.append, len, _thread._count

    def report(index, value):
        if length(reports) != index:
            raise RuntimeError("strict checks out of order")
        append((index, encode(value)))

    # The code runs as a module named "solution" (also sys.modules["__main__"]), so an
    # `if __name__ == "__main__":` block (reading stdin, which is closed) is skipped, as common
    # code-eval harnesses do; its classes' `__module__` names a module that sys.modules holds.
    module = types.ModuleType("solution")
    module.__file__ = "/work/main.py"
    sys.modules["__main__"] = sys.modules["solution"] = module
    _restrict_process()
    sys.pycache_prefix = "/nonexistent-pycache"  # no cached bytecode: imports compile from source, marshal unused
    sys.modules.pop("gc", None)
    loaders, loader_globals = _guard_module_loaders()
    _install_guard(loaders)
    state = _snapshot([loader_globals], module)
    # From here on the code may have replaced any builtin (`builtins.exec`, `builtins.dict`...)
    # or global: everything the rest of this function uses is bound now, before it runs.
    run, restore, name_of, base_error, kind, text, listed = exec, _restore, _name, BaseException, type, str, list
    globals_of_code = module.__dict__  # not read through the module after the code ran: its class is the code's
    try:
        run(compiled_code, globals_of_code)
    except base_error as err:  # noqa: BLE001 - SystemExit included: the tests did not run
        return False, "code raised " + name_of(err), reports
    if threads() != 0:  # none can be made (seccomp); checked all the same
        return False, "code left a thread running", reports
    if not restore(state):  # the tests see the modules (builtins first) as they were before the code ran
        return False, "code changed a class that could not be restored", reports
    namespace = {name: value for name, value in listed(globals_of_code.items())
                 if kind(name) is text and name not in clean_builtins and name not in imported}
    namespace["__name__"] = "__main__"
    namespace["__builtins__"] = clean_builtins
    namespace["__report__"] = report
    try:
        run(compiled_tests, namespace)
    except base_error as err:  # noqa: BLE001
        return False, "tests raised " + name_of(err), reports
    return True, "", reports


def _name(err, kind=type, text=str, error=BaseException):
    """The exception's class name; looks up no global or builtin (it runs after the code)."""
    try:
        name = kind(err).__name__
        return name if kind(name) is text else "?"
    except error:  # noqa: BLE001
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
    # Bound before the code runs (inside _run_tests): nothing below looks up a builtin.
    kind, text, base_error, name_of, join, encode = type, str, BaseException, _name, str.join, str.encode
    try:
        passed, why, reports = _run_tests(request)
        del request
        lines = [f"{value_token} {i} {dumps(v)}" for i, v in reports]
        lines.append(pass_token if passed is True else "FAIL " + (why if kind(why) is text else "?"))
    except base_error as err:  # noqa: BLE001 - the harness itself failed: no verdict
        lines = [f"FAIL harness {name_of(err)}"]
    data = encode(join("\n", lines) + "\n")
    while data:
        data = data[write(channel, data):]
    for stream in streams:  # what the code printed, for the logs; the verdict is already out
        try:
            stream.flush()
        except base_error:  # noqa: BLE001
            pass
    exit_now(0)


if __name__ == "__main__":
    main()
