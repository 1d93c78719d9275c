"""Reward hacking against the code verifier: programs that try to score 1 without solving
the task. Each would have passed a verifier that reads the exit status of a file holding
the solution with the tests appended; each must score 0 here."""
from __future__ import annotations

import textwrap

import pytest

from rlhf_platform.rewards.code import code_tests, code_tests_strict
from rlhf_platform.rewards.sandbox import SandboxLimits, SandboxUnavailable, run_sandboxed, run_tests

LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=6.0, memory_bytes=256 * 2**20, file_bytes=2**16)
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0  # marker-7f3a\n"
WRONG = "def add(a, b):\n    return a - b\n"


def passes(code: str, tests: str = TESTS, strict: bool = False) -> bool:
    return run_tests(textwrap.dedent(code), tests, LIMITS, strict=strict).passed


def test_a_correct_solution_passes_and_a_wrong_one_fails():
    assert passes("def add(a, b):\n    return a + b\n")
    assert not passes(WRONG)
    reply = "```python\ndef add(a, b):\n    return a + b\n```"
    assert code_tests(["q"], [reply], answer=[TESTS], limits=LIMITS) == [1.0]
    assert code_tests_strict(["q"], [reply], answer=[TESTS], limits=LIMITS) == [1.0]


@pytest.mark.parametrize("ending", [
    "import sys\nsys.exit(0)",
    "import os\nos._exit(0)",
    "raise SystemExit(0)",
    "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
], ids=["sys.exit", "os._exit", "SystemExit", "kill-self"])
def test_ending_the_process_before_the_asserts_run_scores_0(ending):
    assert not passes(WRONG + ending)


def test_ending_the_process_from_inside_a_tested_function_scores_0():
    assert not passes("import os\ndef add(a, b):\n    os._exit(0)\n")


@pytest.mark.parametrize("rewrite", [
    "import atexit, os\natexit.register(lambda: os._exit(0))",
    "import sys, os\nsys.excepthook = lambda *a: os._exit(0)",
    "import threading, time, os\nthreading.Thread(target=lambda: (time.sleep(0.3), os._exit(0)), daemon=True).start()",
    "import signal, os\nsignal.signal(signal.SIGTERM, lambda *a: os._exit(0))",
], ids=["atexit", "excepthook", "thread", "signal-handler"])
def test_rewriting_the_exit_status_after_the_asserts_fail_scores_0(rewrite):
    assert not passes(WRONG + rewrite)


@pytest.mark.parametrize("rerun", [
    "import os, sys\nos.execv(sys.executable, [sys.executable, '-O', '/work/main.py'])",
    "import subprocess, sys, os\nrc = subprocess.run([sys.executable, '-O', __file__]).returncode\nos._exit(rc)",
    "import sys\nsys.flags = None\n__debug__",
], ids=["exec -O", "subprocess -O", "flags"])
def test_running_itself_again_with_asserts_compiled_out_scores_0(rerun):
    assert not passes(WRONG + rerun)


def test_asserts_are_kept_even_when_the_interpreter_is_asked_to_optimise():
    """The harness compiles the tests with optimize=0: an assert is never compiled out."""
    assert not passes(WRONG, tests="import sys\nassert add(2, 3) == 5")


def test_the_tests_are_not_in_its_file_or_anywhere_on_its_filesystem():
    search = r"""
    import os
    found = []
    for top, dirs, files in os.walk("/"):
        if top.startswith(("/usr", "/lib", "/bin", "/sbin", "/root", "/dev")):
            dirs[:] = []  # the read-only system and Python installation
            continue
        for name in files:
            try:
                if b"marker-" + b"7f3a" in open(os.path.join(top, name), "rb").read():
                    found.append(os.path.join(top, name))
            except OSError:
                pass
    assert not found, found
    assert "marker-" + "7f3a" not in open(__file__).read()
    def add(a, b):
        return a + b
    """
    result = run_tests(textwrap.dedent(search), TESTS, LIMITS)
    assert result.passed, (result.reason, result.stdout, result.stderr)  # it ran, found nothing, and a correct add passes


# A signal handler is called with the frame it interrupted: with a timer firing while the
# harness runs, it could walk up to the harness's locals and take the pass token.
SIGNAL_FRAME_THIEF = """
import os, signal, time
def steal(signum, frame):
    while frame is not None:
        token = frame.f_locals.get("pass_token")
        if token:
            os.write(int(os.environ["SANDBOX_VERDICT_FD"]), (token + "\\n").encode())
            os._exit(0)
        frame = frame.f_back
signal.signal(signal.SIGALRM, steal)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
def add(a, b):
    started = time.time()
    while time.time() - started < 0.5:
        pass
    return a - b
"""


# A frame kept alive in a reference cycle lands in gc.garbage under DEBUG_SAVEALL; its
# f_back chain leads to the harness's frames.
GC_GARBAGE_FRAME_THIEF = """
import gc, os
def trap():
    try:
        raise ValueError
    except ValueError as err:
        kept = err
gc.set_debug(gc.DEBUG_SAVEALL)
trap()
gc.collect()
frame = next(o for o in gc.garbage if type(o).__name__ == "frame")
while frame is not None:
    if "pass_token" in frame.f_locals:
        os.write(int(os.environ["SANDBOX_VERDICT_FD"]), (frame.f_locals["pass_token"] + "\\n").encode())
        os._exit(0)
    frame = frame.f_back
def add(a, b):
    return a - b
"""


# A harness function reached through a wrapper's __globals__, its code swapped for one
# returning an object whose __radd__ forges the outcome string.
HARNESS_REWRITE = """
import _imp
harness = _imp.create_builtin.__globals__
class Forged:
    def __radd__(self, other):
        return "PASS"
def forged(err, make=Forged):
    return make()
harness["_name"].__code__ = forged.__code__
harness["_name"].__defaults__ = forged.__defaults__
raise SystemExit
"""


@pytest.mark.parametrize("peek", [
    "import sys\ndef add(a, b):\n    return sys._getframe(1).f_code.co_consts",
    "import inspect\ndef add(a, b):\n    return inspect.stack()[1].frame.f_locals",
    "def add(a, b):\n    try:\n        raise ValueError\n    except ValueError as e:\n        return e.__traceback__.tb_frame.f_back.f_locals",
    "import gc\ndef add(a, b):\n    return [o for o in gc.get_objects() if isinstance(o, str) and 'marker' in o]",
    "import ctypes\ndef add(a, b):\n    return ctypes.string_at(id(a), 8)",
    "import sys\nsys.settrace(lambda *a: None)\ndef add(a, b):\n    return a - b",
    SIGNAL_FRAME_THIEF,
    GC_GARBAGE_FRAME_THIEF,
    GC_GARBAGE_FRAME_THIEF.replace("import gc", "import sys\n_imp = sys.modules['_imp']\n"
                                   "gc = _imp.create_builtin(sys.modules['_frozen_importlib'].ModuleSpec('gc', None))\n"
                                   "_imp.exec_builtin(gc)"),
    "import sys\noriginal = sys.modules['_imp'].create_builtin.__defaults__[0]\ndef add(a, b):\n    return a - b",
    "import marshal\nmarshal.loads(b'')\ndef add(a, b):\n    return a - b",
    HARNESS_REWRITE,
    "import json\ndef forged(*args, **kwargs):\n    return 'PASS'\njson.dumps.__code__ = forged.__code__\ndef add(a, b):\n    return a - b",
], ids=["_getframe", "inspect.stack", "tb_frame", "gc", "ctypes", "settrace", "signal-handler-frame", "gc.garbage",
        "gc-from-_imp", "loader-defaults", "marshal", "harness-globals-rewrite", "code-swap"])
def test_reading_the_tests_or_the_harness_from_memory_is_refused(peek):
    """A tested function that looks at its caller (the tests, holding the expected values,
    or the harness, holding the pass token) gets an error, so it scores 0."""
    result = run_tests(textwrap.dedent(peek), TESTS, LIMITS)
    assert not result.passed and ("raised" in result.reason), result.reason


def test_answers_read_from_the_callers_frame_cannot_pass():
    cheat = """
    import sys
    def add(a, b):
        consts = sys._getframe(1).f_code.co_consts
        return [c for c in consts if isinstance(c, int) and c not in (a, b)][0]
    """
    assert not passes(cheat)


def test_writing_a_verdict_to_every_descriptor_scores_0():
    forge = """
    import os
    for fd in range(3, 64):
        for line in (b"PASS\\n", b"0" * 32 + b"\\n"):
            try:
                os.write(fd, line)
            except OSError:
                pass
    """
    assert not passes(WRONG + textwrap.dedent(forge))


def test_redirecting_the_verdict_pipe_reveals_no_pass_token():
    """The code swaps its own pipe in for the verdict pipe and, after the tests fail, replays
    what the harness wrote into the real one: the harness wrote only FAIL."""
    relay = """
    import os, threading
    real = {}
    for fd in range(3, 16):
        try:
            os.fstat(fd)
        except OSError:
            continue
        read, write = os.pipe()
        real[fd] = os.dup(fd)
        os.dup2(write, fd)
        def replay(read=read, target=real[fd]):
            data = os.read(read, 4096)
            os.write(target, data.replace(b"FAIL", b"PASS"))
            for line in data.split(b"\\n"):
                os.write(target, line.split(b" ")[0] + b"\\n")
        threading.Thread(target=replay, daemon=True).start()
    """
    assert not passes(WRONG + textwrap.dedent(relay))


@pytest.mark.parametrize("mode", ["program", "tests"])
def test_a_program_printing_the_setup_failure_text_is_a_failure_not_an_infrastructure_error(mode):
    fake = "import sys, os\nsys.stderr.write('sandbox setup failed: no namespaces\\n')\nsys.stderr.flush()\nos._exit(125)\n"
    if mode == "program":
        result = run_sandboxed(fake, LIMITS)  # raises SandboxUnavailable if fooled
        assert result.returncode == 125 and not result.ok
    else:
        try:
            assert not passes(fake)
        except SandboxUnavailable:
            pytest.fail("model-written text was taken for a sandbox setup failure")


def test_a_forged_eq_passes_plain_tests_but_not_strict_ones():
    forged = """
    class Anything:
        def __eq__(self, other):
            return True
    def add(a, b):
        return Anything()
    """
    assert passes(forged)  # documented: `==` trusts the objects compared
    assert not passes(forged, strict=True)


@pytest.mark.parametrize("trick", [
    "import builtins\nbuiltins.sorted = lambda *a, **k: [1, 2]\ndef add(a, b):\n    return [9]",
    "import math\nmath.isclose = lambda *a, **k: True\ndef add(a, b):\n    return 0.0",
    "def add(a, b):\n    return True",  # True == 1 in Python; strict compares type and repr
    "class Int(int):\n    pass\ndef add(a, b):\n    return Int(a + b)",
], ids=["patched-builtin", "patched-module", "bool-for-int", "int-subclass"])
def test_strict_mode_compares_exact_types_and_values_outside_the_sandbox(trick):
    tests = "assert sorted(add(1, 1)) == [1, 2]" if "sorted" in trick else (
        "assert add(1, 1) == 2.0" if "isclose" in trick else "assert add(1, 0) == 1")
    assert not passes(trick, tests=tests, strict=True)


def test_a_module_patched_by_the_code_is_restored_before_the_tests():
    patch = "import math\nmath.isclose = lambda *a, **k: True\ndef add(a, b):\n    return 0.0"
    assert not passes(patch, tests="import math\nassert math.isclose(add(1, 1), 2.0)")


def test_strict_mode_refuses_tests_it_cannot_check_outside():
    with pytest.raises(ValueError, match="line 2 uses math"):
        run_tests("def f(): return 1.0", "import math\nassert math.floor(f()) == 1", LIMITS, strict=True)
    with pytest.raises(ValueError, match="line 1"):
        run_tests("def f(): return 1", "assert f() > 0", LIMITS, strict=True)
    with pytest.raises(ValueError, match="no literal"):
        run_tests("def f(): return 1", "x = 1\nassert f() == x", LIMITS, strict=True)


@pytest.mark.parametrize("tests", ["   ", "5", "# assert f() == 1", "print('assert')"])
def test_tests_without_an_assert_are_refused(tests):
    with pytest.raises(ValueError, match="assert"):
        code_tests(["q"], ["def f(): pass"], answer=[tests], limits=LIMITS)


def test_strict_tests_reach_the_sandbox_without_their_expected_values(monkeypatch):
    """Even code that took over the whole interpreter could not report the right values:
    the literals never enter the sandbox."""
    from rlhf_platform.rewards import sandbox

    sent = []
    real = sandbox._launch
    monkeypatch.setattr(sandbox, "_launch", lambda request, limits: (sent.append(request), real(request, limits))[1])
    assert run_tests("def add(a, b):\n    return a + b", "assert add(2, 3) == 98765", LIMITS, strict=True).passed is False
    assert "98765" not in sent[0]["tests"] and "__report__(0, add(2, 3))" in sent[0]["tests"]


@pytest.mark.parametrize("forged", ["{value} nospace", "{value} 99999999999999999999 1", "{value} 0 [[[[[[[[[[[[", "{value} x 1"])
def test_malformed_value_lines_are_a_failure_not_a_crash(monkeypatch, forged):
    """A value line only a compromised harness could write: the caller fails the reply
    instead of raising."""
    from rlhf_platform.rewards import sandbox

    real = sandbox._launch

    def launch(request, limits):
        result, verdict = real(request, limits)
        extra = forged.format(value=request["value_token"]) + "\n" + request["pass_token"] + "\n"
        return result, verdict + extra.encode()

    monkeypatch.setattr(sandbox, "_launch", launch)
    result = run_tests("def add(a, b):\n    return a + b", "assert add(2, 3) == 5", LIMITS, strict=True)
    assert result.passed is False and "strict check" in result.reason


# --- A second hostile review: each class below passed (scored 1) before its fix. ---

FORGED_EQ = """
class Anything:
    def __eq__(self, other):
        return True
def add(a, b):
    return Anything()
"""


@pytest.mark.parametrize("tests", [
    "for a, b, want in [(2, 3, 5), (-1, 1, 0)]:\n    assert add(a, b) == want",
    "if True:\n    assert add(10, 5) == 15",
    "def check():\n    assert add(1, 1) == 2\ncheck()\nassert add(2, 3) == 5",
    "try:\n    assert add(1, 1) == 2\nexcept ZeroDivisionError:\n    pass",
    "with open('/dev/null') as f:\n    assert add(1, 1) == 2",
    "assert add(2, 3) == 5\nwhile True:\n    assert add(1, 1) == 2\n    break",
], ids=["for", "if", "def", "try", "with", "while-after-top-level"])
def test_strict_mode_refuses_asserts_that_are_not_top_level(tests):
    """A nested assert reached the sandbox with its literal and compared with `==`, so a
    forged `__eq__` passed strict tests; such tests are refused now, naming the line."""
    with pytest.raises(ValueError, match=r"line \d+ is an assert inside"):
        run_tests(textwrap.dedent(FORGED_EQ), tests, LIMITS, strict=True)
    with pytest.raises(ValueError, match="inside"):
        code_tests_strict(["q"], ["```python\n" + FORGED_EQ + "```"], answer=[tests], limits=LIMITS)


def test_strict_tests_with_no_check_are_refused():
    with pytest.raises(ValueError, match="no top-level"):
        run_tests(WRONG, "add(1, 2)\nx = 3", LIMITS, strict=True)


def test_extract_code_is_linear_on_a_reply_of_backticks():
    import time

    from rlhf_platform.rewards.code import extract_code

    started = time.monotonic()
    for reply in ("`" * 200_000, "```" + "a" * 200_000, "```\n" * 50_000):
        extract_code(reply)
    assert time.monotonic() - started < 2.0
    assert extract_code("text\n```python\nx = 1\n```\nmore ```py\ny = 2\n``` end") == "y = 2\n"


# Native code in the harness's process (plain mode): each would read the pass token from
# the harness's frames or memory. Loaded under a dotted name, a blocked module passed a
# check on the full name (CPython calls PyInit_<last component>).
DOTTED_EXTENSION = """
import sys, importlib.machinery, importlib.util
def load(real):
    directory = [p for p in sys.path if p.endswith("lib-dynload")][0]
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    path, name = directory + "/" + real + suffix, "x." + real
    spec = importlib.util.spec_from_file_location(name, path, loader=importlib.machinery.ExtensionFileLoader(name, path))
    return importlib.util.module_from_spec(spec)
load({module!r})
def add(a, b):
    return a + b
"""

SUBINTERPRETER_TOKEN = """
import sys, importlib.machinery, importlib.util, glob
path = glob.glob(sys.base_prefix + "/lib/python3*/lib-dynload/_xxsubinterpreters.*.so")[0]
name = "x._xxsubinterpreters"
spec = importlib.util.spec_from_file_location(name, path, loader=importlib.machinery.ExtensionFileLoader(name, path))
sub = importlib.util.module_from_spec(spec)
interp = sub.create()
sub.run_string(interp, '''
import ctypes, os
api = ctypes.pythonapi
api.PyInterpreterState_Main.restype = ctypes.c_void_p
api.PyInterpreterState_ThreadHead.restype = ctypes.c_void_p
api.PyInterpreterState_ThreadHead.argtypes = [ctypes.c_void_p]
api.PyThreadState_GetFrame.restype = ctypes.py_object
api.PyThreadState_GetFrame.argtypes = [ctypes.c_void_p]
frame = api.PyThreadState_GetFrame(api.PyInterpreterState_ThreadHead(api.PyInterpreterState_Main()))
while frame is not None:
    if "pass_token" in frame.f_locals:
        os.write(int(os.environ["SANDBOX_VERDICT_FD"]), (frame.f_locals["pass_token"] + "\\\\n").encode())
        os._exit(0)
    frame = frame.f_back
''')
"""

COMPILED_EXTENSION_TOKEN = r'''
import os, sys, subprocess, importlib.machinery, importlib.util, glob
SRC = """
#include <Python.h>
#include <frameobject.h>
static PyObject *steal(PyObject *self, PyObject *args) {
    PyFrameObject *f = PyEval_GetFrame();
    Py_XINCREF(f);
    while (f) {
        PyObject *locals = PyFrame_GetLocals(f);
        if (locals) {
            PyObject *t = PyDict_GetItemString(locals, "pass_token");
            if (t) { Py_INCREF(t); Py_DECREF(locals); Py_DECREF(f); return t; }
            Py_DECREF(locals);
        }
        PyFrameObject *b = PyFrame_GetBack(f);
        Py_DECREF(f); f = b;
    }
    Py_RETURN_NONE;
}
static PyMethodDef M[] = {{"steal", steal, METH_NOARGS, ""}, {0}};
static struct PyModuleDef D = {PyModuleDef_HEAD_INIT, "evil", 0, -1, M};
PyMODINIT_FUNC PyInit_evil(void) { return PyModule_Create(&D); }
"""
open("/work/evil.c", "w").write(SRC)
include = glob.glob(sys.base_prefix + "/include/python3*")[0]
subprocess.run(["gcc", "-shared", "-fPIC", "-I" + include, "/work/evil.c", "-o", "/work/evil.so"], check=True)
spec = importlib.util.spec_from_file_location("evil", "/work/evil.so",
        loader=importlib.machinery.ExtensionFileLoader("evil", "/work/evil.so"))
token = importlib.util.module_from_spec(spec).steal()
os.write(int(os.environ["SANDBOX_VERDICT_FD"]), (token + "\n").encode())
os._exit(0)
'''

# The wrappers' globals were a dict the code could reach (`__globals__`) and write: giving
# it an `__import__` let _cffi_backend (from the host's site-packages) load and read memory.
# Now it holds nothing that decides anything, and is put back before the tests.
LOADER_STATE = """
import _imp, sys, importlib.machinery, importlib.util
create = _imp.create_dynamic
scope = create.__globals__
assert set(scope) == {"__builtins__"}, sorted(scope)  # no original loader, no allow list
assert create.__closure__ is None
for attribute in ("__defaults__", "__kwdefaults__", "__code__"):
    try:
        getattr(create, attribute)
        raise SystemExit("read " + attribute)
    except ValueError:
        pass
try:
    create.__defaults__ = (None,)
    raise SystemExit("replaced the defaults")
except ValueError:
    pass
scope["type"] = lambda value: str  # the wrappers look up no global name
scope["_paths"] = {"_ctypes": "anything"}
directory = [p for p in sys.path if p.endswith("lib-dynload")][0]
path = directory + "/_ctypes" + importlib.machinery.EXTENSION_SUFFIXES[0]
try:
    importlib.util.module_from_spec(importlib.util.spec_from_file_location(
        "_ctypes", path, loader=importlib.machinery.ExtensionFileLoader("_ctypes", path)))
    raise SystemExit("loaded _ctypes")
except ImportError:
    pass
scope["__builtins__"] = {}  # an extension module's init imports through it: put back before the tests
def add(a, b):
    return a + b
"""


def test_the_module_loaders_state_is_out_of_the_codes_reach():
    result = run_tests(textwrap.dedent(LOADER_STATE), TESTS + "import pickle\nassert pickle.loads(pickle.dumps(add(1, 2))) == 3\n",
                       LIMITS)
    assert result.passed, (result.reason, result.stderr[-2000:])


@pytest.mark.parametrize("code", [
    DOTTED_EXTENSION.format(module="_ctypes"),
    DOTTED_EXTENSION.format(module="_xxsubinterpreters"),
    DOTTED_EXTENSION.format(module="_testcapi"),
    DOTTED_EXTENSION.format(module="_testinternalcapi"),
    "import sys\n_imp = sys.modules['_imp']\nspec = sys.modules['_frozen_importlib'].ModuleSpec('_imp', None)\n"
    "fresh = _imp.create_builtin(spec)\ndef add(a, b):\n    return a + b",
    "import sys, glob\nsys.path.append(glob.glob(sys.base_prefix + '/lib/python3*/site-packages')[0])\n"
    "import _cffi_backend\ndef add(a, b):\n    return a + b",
], ids=["x._ctypes", "x._xxsubinterpreters", "x._testcapi", "x._testinternalcapi", "fresh-_imp", "site-packages"])
def test_extension_modules_outside_the_allow_list_cannot_be_loaded(code):
    result = run_tests(textwrap.dedent(code), TESTS, LIMITS)
    assert not result.passed and result.reason in ("code raised ImportError", "code raised ModuleNotFoundError"), \
        result.reason


@pytest.mark.parametrize("code", [SUBINTERPRETER_TOKEN, COMPILED_EXTENSION_TOKEN], ids=["subinterpreter", "compiled-extension"])
def test_native_code_cannot_take_the_pass_token(code):
    result = run_tests(textwrap.dedent(code), TESTS, LIMITS)
    assert not result.passed, (result.reason, result.stderr[-2000:])


def test_a_correct_solution_using_the_standard_library_passes():
    """Extension modules whose init imports (_pickle, _elementtree, _datetime...) ran under
    the loader's builtins, which had no `__import__`: a correct solution scored 0."""
    code = """
    import math, itertools, collections, heapq, bisect, functools, re, string, json, pickle, decimal, fractions
    import xml.etree.ElementTree as ET, datetime, random, statistics, operator, typing, dataclasses, enum
    import csv, array, hashlib, zlib, struct, binascii, uuid, unicodedata, cmath, queue, calendar, copy
    def add(a, b):
        assert pickle.loads(pickle.dumps([a, b])) == [a, b]
        assert ET.fromstring("<r>%d</r>" % a).text == str(a)
        assert datetime.date(2024, 1, 1) + datetime.timedelta(days=b) > datetime.date(2023, 1, 1)
        return a + b
    """
    tests = TESTS + "import pickle, datetime\nassert pickle.loads(pickle.dumps(add(1, 1))) == 2\n"
    result = run_tests(textwrap.dedent(code), tests, LIMITS)
    assert result.passed, (result.reason, result.stderr[-2000:])
    assert run_tests(textwrap.dedent(code), "assert add(2, 3) == 5", LIMITS, strict=True).passed


ROOT = "\nimport time\ndef root(x):\n    time.sleep(0.01)\n    return 0.0\n"
MATH_TESTS = "import math\nr = root(2)\nassert math.isclose(r, 1.41421356)\nassert math.isclose(root(9), 3.0)\n"
CMATH_TESTS = "import cmath\nassert cmath.isclose(root(2), 1.41421356)\n"


# The code changed the import system, a class, or started a thread to change things later:
# what the tests import must be what was there before the code ran.
@pytest.mark.parametrize("code, tests", [
    ("import sys, types\nfake = types.ModuleType('math')\nfake.__dict__.update(sys.modules['math'].__dict__)\n"
     "fake.isclose = lambda *a, **k: True\nsys.modules['math'] = fake", MATH_TESTS),
    ("import sys, types, importlib.machinery\nclass Finder:\n    def find_spec(self, name, path=None, target=None):\n"
     "        if name == 'cmath':\n            return importlib.machinery.ModuleSpec(name, self)\n"
     "    def create_module(self, spec):\n        m = types.ModuleType(spec.name)\n        m.isclose = lambda *a, **k: True\n"
     "        return m\n    def exec_module(self, m):\n        pass\nsys.meta_path.insert(0, Finder())", CMATH_TESTS),
    ("import sys, types\nfake = types.ModuleType('cmath')\nfake.isclose = lambda *a, **k: True\nsys.modules['cmath'] = fake",
     CMATH_TESTS),
    ("import sys, types\nclass Finder:\n    def find_spec(self, name, target=None):\n        return None\n"
     "sys.path_importer_cache[[p for p in sys.path if p.endswith('lib-dynload')][0]] = None\nsys.path.insert(0, '/work')\n"
     "open('/work/cmath.py', 'w').write('isclose = lambda *a, **k: True')", CMATH_TESTS),
    ("import fractions\nfractions.Fraction.__eq__ = lambda self, other: True",
     "import fractions\nassert fractions.Fraction(root(9)) == fractions.Fraction(3)\n"),
    ("import math, threading, time\ndef patch():\n    while True:\n        math.__dict__['isclose'] = lambda *a, **k: True\n"
     "        time.sleep(0.0005)\nthreading.Thread(target=patch, daemon=True).start()", MATH_TESTS),
    ("import math, _thread, time\ndef patch():\n    while True:\n        math.__dict__['isclose'] = lambda *a, **k: True\n"
     "        time.sleep(0.0005)\n_thread.start_new_thread(patch, ())", MATH_TESTS),
], ids=["sys.modules-swap", "meta_path-finder", "sys.modules-new", "sys.path", "class-attribute", "thread", "raw-thread"])
def test_what_the_tests_import_is_what_was_there_before_the_code_ran(code, tests):
    result = run_tests(code + ROOT, tests, LIMITS)
    assert not result.passed, result.reason


def test_a_solution_that_patches_nothing_still_sees_its_own_imports():
    code = "import fractions, cmath\ndef root(x):\n    return fractions.Fraction(int(cmath.sqrt(x).real))\n"
    assert run_tests(code, "import fractions\nassert root(9) == fractions.Fraction(3)\n", LIMITS).passed


SHADOWED_BUILTINS = """
abs = lambda x: 0
all = lambda it: True
len = lambda x: 4
sorted = lambda x: [2, 3, 5, 7]
def sqrt2():
    return 0.0
def primes(n):
    return []
"""
SHADOW_TESTS = ("assert abs(sqrt2() - 1.41421356) < 1e-6\n"
                "assert all(sqrt2() > x for x in [1.0, 1.4])\n"
                "assert len(primes(10)) == 4 and sorted(primes(10)) == [2, 3, 5, 7]\n"
                "assert isinstance(primes(3), list) and type(sqrt2()) is float\n")


def test_the_codes_globals_do_not_shadow_builtins_in_the_tests():
    reply = "```python\n" + SHADOWED_BUILTINS + "```"
    assert code_tests(["q"], [reply], answer=[SHADOW_TESTS], limits=LIMITS) == [0.0]
    for line in SHADOW_TESTS.splitlines()[:3]:  # each one alone
        assert not passes(SHADOWED_BUILTINS, tests=line)
    correct = ("import math\ndef sqrt2():\n    return math.sqrt(2)\n"
               "def primes(n):\n    return [p for p in range(2, n) if all(p % d for d in range(2, p))]\n")
    assert passes(correct, tests=SHADOW_TESTS)


# --- A third hostile review: each below passed (scored 1) or was wrongly failed before its fix. ---

BUILTINS_TAKEOVER = '''
import builtins
class _D:
    clear = staticmethod(lambda d: None)
    update = staticmethod(lambda d, c: None)
builtins.exec = lambda *a, **k: None
builtins.dict = _D
def add(a, b):
    return 0
'''


@pytest.mark.parametrize("code", [
    BUILTINS_TAKEOVER,
    "import builtins\nbuiltins.exec = lambda *a, **k: None\ndef add(a, b):\n    return 0\n",
    "import builtins\nbuiltins.BaseException = int\nbuiltins.type = lambda x: 0\nbuiltins.list = tuple\n"
    "builtins.exec = lambda *a, **k: None\ndef add(a, b):\n    return 0\n",
], ids=["dict-and-exec", "exec", "exception-type-list"])
def test_builtins_the_code_replaces_are_not_what_the_harness_uses_after_it(code):
    """The harness looked up `exec`, `dict.clear`... in builtins after the code ran: the code's
    no-op `exec` "ran" the tests (`assert False` included) and the verdict was a pass."""
    assert not passes(code, tests=TESTS + "assert False, 'never passes'\n")
    assert not passes(code)


MODULE_CLASS_SWAP = '''
import math, types
class Lying(types.ModuleType):
    def __getattribute__(self, name):
        if name == "isclose":
            return lambda *a, **k: True
        return types.ModuleType.__getattribute__(self, name)
math.__class__ = Lying
def add(a, b):
    return 0.0
'''
MODULE_DICT_DECOY = '''
import math, types
real = math.__dict__
class Decoy(types.ModuleType):
    def __getattribute__(self, name):
        if name == "__dict__":
            object.__setattr__(self, "__class__", types.ModuleType)
            return {}
        return types.ModuleType.__getattribute__(self, name)
real["isclose"] = lambda *a, **k: True
math.__class__ = Decoy
def add(a, b):
    return 0.0
'''
ISCLOSE_TESTS = "import math\nassert math.isclose(add(2, 3), 5.0)\n"


@pytest.mark.parametrize("code, tests", [
    (MODULE_CLASS_SWAP, ISCLOSE_TESTS),
    (MODULE_DICT_DECOY, ISCLOSE_TESTS),
    ("import collections\nclass Evil(dict):\n    __slots__ = ()\n    def __getitem__(self, key):\n        return 0\n"
     "collections.Counter.__bases__ = (Evil,)\ndef add(a, b):\n    return 'zzz'\n",
     "from collections import Counter\nassert Counter(add('lis', 'ten')) == Counter('silent')\n"),
    ("import re\nre.fullmatch(r'[a-z]+@[a-z]+\\.com', 'x@y.com')\nfor key in list(re._cache):\n"
     "    if key[1] == r'[a-z]+@[a-z]+\\.com':\n        re._cache[key] = re.compile(r'.*', key[2])\n"
     "def add(a, b):\n    return 'not an email'\n",
     "import re\nassert re.fullmatch(r'[a-z]+@[a-z]+\\.com', add('bob', '@x.com'))\n"),
    ("import random\nrandom._inst._randbelow = lambda n: 0\nrandom._inst.random = lambda: 0.0\n"
     "def add(xs, ys):\n    return list(xs)\n",
     "import random\nrandom.seed(0)\nxs = [random.randint(0, 1000) for _ in range(50)]\nassert add(xs, 0) == sorted(xs)\n"),
    ("import decimal\ndecimal.getcontext().prec = 1\ndecimal.getcontext().Emin = 0\n"
     "def add(a, b):\n    return decimal.Decimal('1')\n",
     "from decimal import Decimal\nassert abs(add(1, 0.41421356) - Decimal('1.41421356')) < Decimal('1e-8')\n"),
], ids=["module-class", "module-dict-decoy", "class-bases", "re-cache", "random-instance", "decimal-context"])
def test_state_the_code_changes_in_place_is_put_back_before_plain_tests(code, tests):
    """Plain mode put back module namespaces by contents but not a module's class, a class's
    bases, `re`'s cache, `decimal`'s context or `random`'s shared instance (and read each
    namespace through `module.__dict__`, which a swapped class answered with a decoy)."""
    assert not passes(code, tests=tests)


@pytest.mark.parametrize("tests, refused", [
    ("assert (add(2, 3) == 5) == True", "line 1 has a Compare"),
    ("assert (abs(add(0.1, 0.2) - 0.3) < 1e-9) == True", "line 1 has a Compare"),
    ("assert add(1, 2) == 3\nassert isinstance(add(1, 1), int) == True", r"line 2 calls isinstance\(\)"),
    ("assert (add(1, 1) and 1) == 1", "line 1 has a BoolOp"),
    ("assert (not add(1, 1)) == False", "line 1 has a UnaryOp"),
    ("assert (1 if add(1, 1) else 0) == 1", "line 1 has a IfExp"),
    ("assert (lambda: add(1, 1))() == 2", "line 1 has a Lambda"),
    ("assert bool(add(1, 1)) == True", r"line 1 calls bool\(\)"),
    ("def ok(r):\n    return r * r\nassert ok(add(1, 1)) == 4", "line 1 is a FunctionDef"),
    ("if add(2, 3) != 5:\n    raise AssertionError\nassert str(add.__name__) == 'add'", "line 1 is a If"),
    ("assert add(2, 3) == 5\nx = add(1, 1)", "line 2 is a Assign"),
    ("assert add(2, 3) == 5\nadd(1, 1)", "line 2 is a Expr"),
], ids=["compare", "compare-float", "isinstance", "boolop", "not", "ifexp", "lambda", "bool", "helper", "if-raise",
        "assignment", "expression"])
def test_strict_tests_hold_only_imports_and_asserts_of_a_value(tests, refused):
    """A comparison, truth test or helper inside strict tests runs in the sandbox on the
    code's objects (their `__eq__`, `__lt__`, `__class__` decide it) and yields an honest
    bool: `(add(2, 3) == 5) == True` passed with a forged `__eq__`. Such tests are refused."""
    with pytest.raises(ValueError, match=refused):
        run_tests(textwrap.dedent(FORGED_EQ), tests, LIMITS, strict=True)
    with pytest.raises(ValueError, match=refused):
        code_tests_strict(["q"], ["```python\n" + FORGED_EQ + "```"], answer=[tests], limits=LIMITS)


@pytest.mark.parametrize("code", [
    "import builtins\ndef add(a, b):\n    builtins.repr = lambda x: '5'\n    return 0\n",
    "class M(type):\n    def __eq__(cls, other):\n        return True\n    __hash__ = type.__hash__\n"
    "class int(metaclass=M):\n    def __repr__(self):\n        return '5'\ndef add(a, b):\n    return int()\n",
], ids=["repr-replaced-while-tests-run", "metaclass-eq-named-int"])
def test_strict_values_are_encoded_with_the_harness_own_builtins(code):
    """`canonical` looked up `repr` in builtins while the tests ran (a tested function could
    replace it), and matched exact types with `in`, which asks the value's metaclass."""
    assert not passes(code, tests="assert add(2, 3) == 5\n", strict=True)


def test_a_correct_solution_with_a_main_block_passes():
    """The code ran as `__main__` with stdin closed: a usual `if __name__ == "__main__":`
    block reading input failed a correct solution. It runs as a module named `solution`."""
    code = ("from __future__ import annotations\nimport dataclasses\n"
            "@dataclasses.dataclass\nclass P:\n    x: int\n"
            "def add(a, b):\n    return P(a).x + b\n"
            "if __name__ == '__main__':\n    a, b = map(int, input().split())\n    print(add(a, b))\n")
    assert passes(code)
    assert passes(code, strict=True)
    assert passes(code, tests="assert __name__ == '__main__'\nassert add(2, 3) == 5\n")
