"""The floor plan: ``resnet/`` is the app floor, so nothing below it (utils/, quantization/, evaluation/) may
import it -- a lower floor importing up makes a package cycle and drags the app into every library import."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOWER_FLOORS = ("utils", "quantization", "evaluation")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every absolute import in ``path``, top-level or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def imports_app(module: str) -> bool:
    return module == "resnet" or module.startswith("resnet.")


@pytest.mark.parametrize("floor", LOWER_FLOORS)
def test_nothing_below_the_app_floor_imports_resnet(floor):
    offending = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                 for path in sorted((ROOT / floor).rglob("*.py"))
                 for line, module in imported_modules(path) if imports_app(module)]
    assert not offending, "\n".join(offending)


def test_the_check_sees_every_import_form(tmp_path):
    """The parser must catch each way of writing the import, nested in a function too, and not a lookalike."""
    source = tmp_path / "probe.py"
    source.write_text("import resnet.run\nfrom resnet import run\ndef f():\n    from resnet.train import main\n"
                      "import resnet_like\nfrom utils import resnet_names\n", encoding="utf-8")
    assert [m for _, m in imported_modules(source) if imports_app(m)] == ["resnet.run", "resnet", "resnet.train"]
