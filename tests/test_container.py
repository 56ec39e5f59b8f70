"""The Dockerfile's CPU runtime target, built for real and run: edgead predict and edgead validate inside it.

No registry is reachable here, so the base image is made locally (debootstrap of a minimal Debian bookworm,
committed with buildah) and handed to the Dockerfile as its BASE and WHEEL_BASE build arguments; buildah builds
with chroot isolation on the vfs storage driver (no daemon). Skips with the reason where the tools, root or
Debian's mirror are missing. The GPU and Jetson targets keep NVIDIA's base images and are not built here.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from edgead import Detector

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[1]
CA = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture(scope="module")
def buildah(tmp_path_factory):
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install buildah debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("building an image with debootstrap and buildah's chroot isolation needs root")
    where = tmp_path_factory.mktemp("containers")
    storage = ["--storage-driver", "vfs", "--root", str(where / "storage"), "--runroot", str(where / "run")]

    def run(*args, check=True, timeout=900):
        r = subprocess.run(["buildah", *storage, *args], capture_output=True, text=True, timeout=timeout)
        if check and r.returncode:
            raise AssertionError(f"buildah {' '.join(args[:2])} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    rootfs = where / "rootfs"
    r = subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(rootfs)], capture_output=True, text=True, timeout=900
    )
    if r.returncode:
        pytest.skip(f"debootstrap could not make a Debian base (mirror unreachable?): {r.stdout[-300:]}")
    c = run("from", "scratch").stdout.strip()
    run("copy", c, str(rootfs), "/")
    run("commit", "-q", c, "localhost/edgead-base:bookworm")
    run("rm", c)
    shutil.rmtree(rootfs)
    yield run
    subprocess.run(["rm", "-rf", str(where)], check=False)


def test_the_cpu_image_builds_and_judges_as_the_host_does(buildah, tiny_bundle, demo_data, capsys):
    base = "localhost/edgead-base:bookworm"
    secret = ["--secret", f"id=pip_cert,src={CA}"] if Path(CA).is_file() else []
    t0 = time.monotonic()
    buildah(
        "bud",
        "--isolation",
        "chroot",
        *secret,
        "--build-arg",
        f"BASE={base}",
        "--build-arg",
        f"WHEEL_BASE={base}",
        "--build-arg",
        "TARGET=cpu",
        "-t",
        "localhost/edgead:cpu",
        str(ROOT),
        timeout=1800,
    )
    built_s = time.monotonic() - t0
    size = buildah("images", "--format", "{{.Size}}", "localhost/edgead:cpu").stdout.strip()
    with capsys.disabled():
        print(
            f"\ncontainer image edgead:cpu (Debian bookworm base, ONNX Runtime CPU): {size}, built in {built_s:.0f} s"
        )
    c = buildah("from", "localhost/edgead:cpu").stdout.strip()
    mounts = ["-v", f"{tiny_bundle}:/bundle:ro", "-v", f"{demo_data / 'test'}:/images:ro"]
    try:
        r = buildah("run", "--isolation", "chroot", *mounts, c, "--", "edgead", "predict", "/bundle", "/images/*/*.png")
        inside = {}
        for line in r.stdout.splitlines():
            path, score, *_ = line.split("\t")
            inside[path.removeprefix("/images/")] = float(score)
        with Detector.load(tiny_bundle, backend="onnxruntime-cpu") as det:
            files = sorted((demo_data / "test").glob("*/*.png"))
            assert len(inside) == len(files)
            for f in files:
                assert inside[f"{f.parent.name}/{f.name}"] == pytest.approx(det.predict(f).score, rel=1e-3, abs=1e-4)
        r = buildah("run", "--isolation", "chroot", *mounts, c, "--", "edgead", "validate", "/bundle")
        assert r.stdout.strip().splitlines()[-1] == "PASSED"
        r = buildah("run", "--isolation", "chroot", c, "--", "edgead", "predict", "/bundle", check=False)
        assert r.returncode != 0 and "Traceback" not in r.stderr  # a mistake inside the image: one line too
    finally:
        buildah("rm", c, check=False)
