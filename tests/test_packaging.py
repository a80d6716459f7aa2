"""The built wheel: every module, py.typed, no harness; it imports without the extras."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_the_wheel_ships_the_package_alone_and_imports_from_itself(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(ROOT)], check=True, timeout=300, capture_output=True)
    (whl,) = tmp_path.glob("jrnn-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    src = {p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src" / "jrnn").rglob("*.py")}
    assert src <= names, sorted(src - names)
    assert "jrnn/py.typed" in names
    assert not [n for n in names if n.split("/")[0] in ("tests", "benchmarks", "experiments")]
    # import it from the wheel itself (a zip on sys.path), with site-packages' dependencies
    # but without the editable install's finder (-S: no .pth files) and without any extra
    code = ("import sys, jrnn, jrnn.cli; assert jrnn.__file__.startswith(sys.argv[1]), jrnn.__file__; "
            "assert 'torch' not in sys.modules and 'equinox' not in sys.modules; print(jrnn.__version__)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(whl), sysconfig.get_paths()["purelib"]]))
    out = subprocess.run([sys.executable, "-S", "-c", code, str(whl)], env=env, check=True,
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "0.1.0"
