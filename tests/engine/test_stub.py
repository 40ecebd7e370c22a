"""The hand-written stub `_native.pyi` matches the compiled module (names of classes,
functions, methods and constants), in both directions."""

import ast
import inspect
from pathlib import Path

import oxiquant
from oxiquant import _native

STUB = Path(oxiquant.__file__).with_name("_native.pyi")


def stub_names():
    tree = ast.parse(STUB.read_text())
    top, members = set(), {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            top.add(node.name)
        if isinstance(node, ast.ClassDef):
            members[node.name] = {
                n.name
                for n in node.body
                if isinstance(n, (ast.FunctionDef, ast.AnnAssign)) and not isinstance(n, ast.AnnAssign)
            } | {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)}
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
    return top, members


def test_stub_matches_module():
    top, members = stub_names()
    public = {n for n in dir(_native) if not n.startswith("_") or n == "__version__"}
    assert {n for n in top if not n.startswith("_")} | {"__version__"} == public | {"__version__"}
    for cls, names in members.items():
        obj = getattr(_native, cls)
        for name in names:
            if name == "unsupported":  # set on instances when raised
                continue
            assert hasattr(obj, name), f"{cls}.{name} in stub but not in module"
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            real = {n for n in vars(obj) if not n.startswith("_")} | ({"__deepcopy__"} & set(vars(obj)))
            assert real <= names, f"{cls}: undocumented {real - names}"


def test_errors_reexported_once():
    for name in ("OxiquantError", "UnsupportedOpError", "ModelFormatError", "ShapeError"):
        assert getattr(oxiquant, name) is getattr(_native, name)
