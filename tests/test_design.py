"""The shape of the code that users and contributors rely on: one option schema reaching every source of
settings, messages worded at the edge, stages and adapters, no import cycles, no private APIs."""

from __future__ import annotations

import ast
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svd_cli.options import OPTIONS, coerce

from .conftest import EXAMPLES, ROOT, read_video

PACKAGE = ROOT / "svd_cli"
MODULES = sorted(PACKAGE.rglob("*.py"))
RECORDED = [o for o in OPTIONS if o.recipe]
# Options that shape a batch or the terminal, not one video: the recipe does not record them.
NOT_RECORDED = {
    "seeds", "variations", "out", "name", "recursive", "overwrite", "allow_download", "json", "quiet", "prompts",
}  # fmt: skip
NOT_RECORDED |= {"ray", "ray_address", "workers"}  # where the videos are made, not what they are
NOT_RECORDED |= {"preview", "keep_preview"}  # a file watched while the video is made, not part of it
NOT_RECORDED |= {"draft"}  # a preset: the recipe records the settings it sets (decoder, keep_latents)
NOT_RECORDED |= {"masks"}  # where each photo's mask is found: the recipe records the mask itself (input.mask)
NOT_RECORDED |= {"gallery"}  # a page about the run, not part of any video
NOT_RECORDED |= {"sign_cert", "sign_key", "sign_tsa"}  # who signs the credentials: the video itself says so
# Recorded options that cannot join the others' run (keep_latents refuses extend), replayed where they are tested.
APART = {"keep_latents"}  # test_finish.py
APART |= {"end", "keyframes"}  # refuse extend, mask and cache: test_ends.py
APART |= {"compile"}  # a cold compile takes a minute: test_compile.py replays it once, reading the compiled code
APART |= {"elevation", "azimuths"}  # sv3d-p's camera path, refused for the tiny SVD model: test_sv3d.py
APART |= {"remove_background", "background_remover"}  # SV3D's, refused for the tiny SVD model: test_sv3d.py
# Options that replace the input image: a run that sets them has none.
INSTEAD_OF_IMAGES = {"prompt", "prompts"}


def _parse(*args: str, env: dict | None = None, monkeypatch=None):
    """`svd animate ARGS` parsed by the real command into the library request, without running it."""
    import typer

    from svd_cli.cli import app
    from svd_cli.cli.animate import request_from

    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    command = typer.main.get_command(app).commands["animate"]
    ctx = command.make_context("animate", [str(a) for a in args])
    return request_from(ctx, ctx.params)


def _as_cli_value(opt, text: str):
    return coerce(opt, text)


def _flag(opt) -> list[str]:
    """The option set to its example on the command line (a setting that is on by default: its --no- flag)."""
    if opt.type is bool:
        return [opt.flag if coerce(opt, opt.example) else "--no-" + opt.flag[2:]]
    return [opt.flag, opt.example]


# --- 1. one schema: flag, variable, config file, recipe -------------------------------------------------


@pytest.mark.parametrize("opt", OPTIONS, ids=[o.name for o in OPTIONS])
def test_every_option_reaches_the_flag_the_variable_and_the_config_file(opt, svd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo = EXAMPLES / "coffee.png"
    # No input image for a prompt (some argument is needed, or the command shows its help).
    inputs = ["--model", "tiny"] if opt.name in INSTEAD_OF_IMAGES else [photo]
    expected = _as_cli_value(opt, opt.example)
    assert expected != opt.default, f"{opt.name}: the example must differ from the default to prove anything"

    flag = _flag(opt)
    assert getattr(_parse(*inputs, *flag), opt.name) == expected, "flag"

    with monkeypatch.context() as m:
        assert getattr(_parse(*inputs, env={opt.env_var: opt.example}, monkeypatch=m), opt.name) == expected, "env"

    value = opt.example if opt.type not in (int, float, bool) else expected
    key = opt.name.replace("_", "-")
    # The working folder's svd.toml, or for an option only the user's own file may set, the user's.
    user_folder = tmp_path / "user-config"
    user_folder.mkdir()
    monkeypatch.setenv("SVD_CONFIG_DIR", str(user_folder))
    config = (tmp_path if opt.local_config else user_folder) / "svd.toml"
    config.write_text(f"{key} = {json.dumps(value)}\n")
    assert getattr(_parse(*inputs), opt.name) == expected, "svd.toml"
    if not opt.local_config:  # the same line in the working folder's file is ignored, and named
        config.unlink()
        (tmp_path / "svd.toml").write_text(f"{key} = {json.dumps(value)}\n")
        assert getattr(_parse(*inputs), opt.name) != expected, "working folder's svd.toml"
        config = tmp_path / "svd.toml"
    # ...and a value of the wrong type there is a usage error naming the file and the key.
    config.write_text(f"{key} = [[1], 2]\n")
    r = svd("animate", photo)
    assert r.code == 2 and len(r.lines) == 1
    assert r.lines[0].startswith(f"svd: error: {config}: {key} = [[1], 2]: "), r.err


def test_a_working_folders_config_cannot_send_work_elsewhere_or_turn_off_the_watermark(svd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLES / "coffee.png", tmp_path / "coffee.png")
    (tmp_path / "svd.toml").write_text(
        'motion-bucket = 90\nwatermark = false\nout = "/tmp/elsewhere/"\nray-address = "127.0.0.1:9"\n'
    )
    r = svd("animate", "coffee.png", "--model", "tiny", "--frames", "2", "--steps", "1", "--size", "256x256")
    assert r.code == 0, r.err
    ignored = [line for line in r.lines if line.startswith(f"svd: warning: {tmp_path / 'svd.toml'}: ignoring")]
    assert [line.split("ignoring ")[1].split(":")[0] for line in ignored] == ["watermark", "out", "ray-address"]
    settings = json.loads((tmp_path / "coffee.mp4.json").read_text())["settings"]
    assert settings["motion_bucket"] == 90 and settings["watermark"] is True  # made here, locally, watermarked


def _example_weight_files(folder: Path) -> None:
    """The files the --unet, --lora and --mask examples name (relative paths): weights made for the tiny
    architecture, and a mask of coffee.png's shape (its left half moves)."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from PIL import Image
    from safetensors.torch import save_file

    mask = Image.new("L", (60, 40))
    mask.paste(255, (0, 0, 30, 40))
    mask.save(folder / "mask.png")

    from svd_cli.models.architectures import build_random_pipeline

    unet = build_random_pipeline("tiny", seed=11).unet
    save_file(unet.state_dict(), str(folder / "unet.safetensors"))
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["to_q"]), unet)
    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(unet).items()}, str(folder / "lora.safetensors"))


def _same_value(opt, replayed, example):
    """Paths are recorded absolute: the replayed value names the same file as the (relative) example."""
    if opt.type is Path:
        return Path(replayed).resolve() == Path(example).resolve()
    if opt.name == "lora":
        return [(Path(p).resolve(), s) for p, s in replayed] == [(Path(p).resolve(), s) for p, s in example]
    return replayed == example


def test_every_recorded_option_is_replayed_from_the_recipe(svd, tiny_dir, tmp_path, monkeypatch):
    """One real run with every recorded option set to its example; `--recipe` gives each value back.

    With a style the prompt says what the restyled photo shows, so every recorded option fits in one run: a
    photo restyled by the image model, then animated (a prompt without a photo: test_text_to_video.py).
    """
    assert {o.name for o in OPTIONS} - {o.name for o in RECORDED} == NOT_RECORDED
    monkeypatch.chdir(tmp_path)
    _example_weight_files(tmp_path)
    args = []
    for opt in RECORDED:
        if opt.name not in APART:
            args += _flag(opt)
    out = tmp_path / "v.gif"
    r = svd("animate", EXAMPLES / "coffee.png", *args, "--out", out)
    assert r.code == 0, r.err
    sidecar = tmp_path / "v.gif.json"
    replayed = _parse("--recipe", sidecar)
    for opt in RECORDED:
        if opt.name not in APART:
            assert _same_value(opt, getattr(replayed, opt.name), _as_cli_value(opt, opt.example)), opt.name
    assert replayed.inputs == [str((EXAMPLES / "coffee.png").resolve())]
    stages = [s["stage"] for s in json.loads(sidecar.read_text())["stages"]]
    # extend 1: two clips; then the post stages in their order (the watermark's example turns it off).
    assert stages == ["first_frame", "animate", "animate", "loop", "upscale", "interpolate", "write"]


# Values of every wrong kind: text, empty, non-finite and huge numbers, negative, fractional, an integer outside
# a list of integer choices (upscale), and a number where text is expected.
WRONG_VALUES = ("x", "", "inf", "-inf", "nan", "1e308", "-1", "1.5", "3", "0")


@pytest.mark.parametrize("opt", OPTIONS, ids=[o.name for o in OPTIONS])
def test_no_value_of_any_option_is_an_unexpected_error(opt, svd, monkeypatch):
    """Every option, set through its variable (text for every type) to values of every wrong kind, with an input
    that does not exist: one `svd: error:` line and exit 2, whether the value or the input is refused first."""
    for value in WRONG_VALUES:
        with monkeypatch.context() as env:
            env.setenv(opt.env_var, value)
            r = svd("animate", "/nonexistent/photo.png", "--model", "tiny")
        assert (r.code, len(r.lines)) == (2, 1), f"{opt.env_var}={value!r}: {r.err}"
        assert r.lines[0].startswith("svd: error: ") and "unexpected" not in r.err, f"{opt.env_var}={value!r}"


def test_config_show_labels_what_decides_an_unset_option(svd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = {row["option"]: row for row in json.loads(svd("config", "show", "--json").out)}
    assert rows["--seed"] == {"option": "--seed", "value": "random", "source": "default"}
    assert rows["--out"]["value"] == "next to each input" and rows["--out"]["source"] == "default"
    assert rows["--name"]["value"] == "{stem}" and rows["--name"]["source"] == "default"
    assert rows["--frames"]["source"] == "model default"


def test_a_bad_config_value_names_the_file(svd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "svd.toml").write_text('fps = "abc"\n')
    r = svd("animate", EXAMPLES / "coffee.png", "--model", "tiny")
    assert r.code == 2
    assert r.lines == [f"svd: error: {tmp_path / 'svd.toml'}: fps = 'abc': expected a whole number."]


# --- 2. errors carry fields; the edge words them ----------------------------------------------------------


def _string_constants(tree: ast.AST):
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_no_flag_is_spelled_below_the_command_line():
    import re

    flag = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
    offenders = []
    for path in MODULES:
        if "cli" in path.relative_to(PACKAGE).parts[:1]:
            continue
        for node in _string_constants(ast.parse(path.read_text())):
            if flag.search(node.value):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert offenders == []


def test_library_errors_name_the_keyword_and_the_cli_names_the_flag(svd, tiny_dir):
    import svd_cli
    from svd_cli.options import Request

    with pytest.raises(svd_cli.OptionError) as info:
        Request(["x.png"], motion_bucket=300)
    assert str(info.value) == "motion_bucket=300: must be between 0 and 255."
    assert (info.value.option, info.value.value, info.value.allowed) == ("motion_bucket", 300, (0, 255))
    r = svd("animate", EXAMPLES / "coffee.png", "--model", "tiny", "--motion-bucket", "300")
    assert r.lines == ["svd: error: --motion-bucket 300: must be between 0 and 255."]


# --- 3. stages and adapters ------------------------------------------------------------------------------


def test_name_template_uses_the_models_defaults(svd, tiny_dir, tmp_path):
    r = svd("animate", EXAMPLES / "coffee.png", "--model", "tiny", "--steps", "1", "--size", "128x64",
            "--name", "{stem}-{fps}fps-{frames}f", "--out", f"{tmp_path}/")  # fmt: skip
    assert r.code == 0, r.err
    assert [p.name for p in tmp_path.glob("*.mp4")] == ["coffee-7fps-8f.mp4"]
    meta, frames = read_video(tmp_path / "coffee-7fps-8f.mp4")
    assert len(frames) == 8 and meta["fps"] == 7.0


def test_adapter_encodes_the_image_exactly_as_diffusers(tiny_dir):
    from svd_cli.io.images import fit_image
    from svd_cli.models.loading import load_model
    from svd_cli.models.sources import resolve_model

    model = load_model(resolve_model("tiny"), torch.device("cpu"), torch.float32)
    picture = fit_image(Image.open(EXAMPLES / "astronaut.png").convert("RGB"), 256, 128, "crop", (255, 255, 255))
    with torch.no_grad():
        ours = model.encode_image(picture, torch.device("cpu"))
        theirs = model.pipe._encode_image(picture, torch.device("cpu"), 1, False)  # diffusers' own, as reference
    assert torch.equal(ours, theirs)
    assert set(model.components()) == {"image_encoder", "vae_encoder", "denoiser", "decoder"}


def test_the_tiny_model_is_built_by_the_one_random_pipeline_builder(tiny_dir):
    from svd_cli.models.architectures import build_random_pipeline
    from svd_cli.models.loading import load_model
    from svd_cli.models.sources import resolve_model
    from svd_cli.models.tiny import TINY_SEED

    saved = load_model(resolve_model("tiny"), torch.device("cpu"), torch.float32)
    built = build_random_pipeline("tiny", seed=TINY_SEED)
    for role in ("unet", "vae", "image_encoder"):
        a, b = getattr(saved, role).state_dict(), getattr(built, role).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), role


# --- 4. the codebase ---------------------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every svd_cli module `path` imports, at any depth (function-level imports included)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("svd_cli"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if (ROOT / Path(*sub.split("."))).with_suffix(".py").exists()
                          or (ROOT / Path(*sub.split(".")) / "__init__.py").exists() else target)  # fmt: skip
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("svd_cli")}
    found.discard(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every import cycle of `graph` (module -> what it imports) that a depth-first walk meets."""
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_import_cycles_among_the_packages_modules():
    graph = {_module_name(p): _imports(p) for p in MODULES}
    graph = {m: {d for d in deps if d in graph and d != "svd_cli"} for m, deps in graph.items()}
    assert _cycles(graph) == []


def _layer(module: str) -> str:
    """The package (svd_cli.models, svd_cli.stages, ...) or top-level module a module belongs to."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_among_the_packages_counting_function_level_imports():
    """Layers point one way: no package imports (at any depth, in any function) a package that imports it back."""
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        module = _module_name(path)
        graph.setdefault(_layer(module), set()).update(
            _layer(d) for d in _imports(path) if _layer(d) != _layer(module) and d != "svd_cli"
        )
    assert _cycles(graph) == []


def test_no_private_api_of_other_packages():
    # PyTorch's fake tensors and dispatch modes (what the GPU simulation is built on, like FlopCounterMode
    # itself) live in these modules.
    allowed = {"torch._subclasses", "torch.utils._python_dispatch", "torch.utils._pytree", "torch._C.DispatchKey"}
    # torch.compile's own knobs (models/compiled.py): the limit of compiled variants per function, which its
    # troubleshooting guide tells users to raise, and its compile start and end callbacks.
    allowed |= {"torch._dynamo.config", "torch._dynamo.callback"}
    offenders = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            modules = []
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Attribute)
                and node.value.attr in ("pipe", "unet", "vae")
            ):
                offenders.append(f"{path.name}:{node.lineno}: .{node.attr}")  # e.g. diffusers' pipe._encode_image
            for module in modules:
                if module.startswith(("svd_cli", "__future__")):
                    continue
                if any(p.startswith("_") for p in module.split(".")) and not any(
                    module.startswith(a) or a.startswith(module + ".") for a in allowed
                ):
                    offenders.append(f"{path.name}:{node.lineno}: {module}")
    assert offenders == []


def test_every_declared_dependency_is_used():
    import tomllib

    import_names = {
        "pillow": "PIL",
        "huggingface-hub": "huggingface_hub",
        "imageio-ffmpeg": "imageio_ffmpeg",
        "invisible-watermark": "imwatermark",
        "c2pa-python": "c2pa",
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    imported = set()
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    for requirement in project["dependencies"]:
        name = requirement.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        module = import_names.get(name, name.replace("-", "_"))
        if name == "tomli" and sys.version_info >= (3, 11):
            continue
        if name == "safetensors":  # read by diffusers/transformers for us (use_safetensors=True); pinned here
            continue
        assert module in imported, f"{name} is declared in pyproject.toml but nothing imports {module}"


def test_the_readmes_layout_names_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("### Layout") : readme.index("Adding an animate option")]
    named = {line.split()[0] for line in layout.splitlines() if line.startswith("      ") and line.split()}
    assert sorted(str(p.relative_to(PACKAGE)) for p in MODULES if str(p.relative_to(PACKAGE)) not in named) == []


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_finds_nothing(command):
    """Lint (with pyproject.toml's rules: complexity at most 15, no stale noqa) and formatting; CI runs this."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "ruff", *command, "svd_cli", "tests"], capture_output=True,
                          text=True, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- 5. smaller defects --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message, line",
    [("", "none"), ("  \n ", "none"), ("\n  first \nsecond", "first"), ("\x1b[31mred\x1b[0m\nmore", "red")],
)
def test_the_first_line_of_an_error_is_never_an_index_error(message, line):
    from svd_cli.errors import first_line

    assert first_line(ValueError(message), "none") == line


@pytest.mark.parametrize("command", [["weights", "list"], ["config", "show"], ["weights", "path", "tiny"]])
def test_debug_is_accepted_by_every_command(svd, tiny_dir, command):
    r = svd(*command, "--debug")
    assert r.code == 0, r.err
    assert "Traceback" not in r.err


@pytest.mark.parametrize("value, offline", [("false", False), ("0", False), ("1", True), ("TRUE", True)])
def test_doctor_and_downloads_agree_on_hf_hub_offline(svd, monkeypatch, value, offline):
    from svd_cli.models.hub import offline_mode

    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert offline_mode() is offline
    from svd_cli.doctor import collect

    assert collect()["hub"]["offline"] is offline


def test_frames_equal_for_the_library_api_and_the_cli(svd, tiny_dir, tmp_path):
    """One orchestration: the same request through `svd_cli.load` and through `svd animate` gives the same frames."""
    import svd_cli

    r = svd("animate", EXAMPLES / "rocket.jpg", "--model", "tiny", "--frames", "3", "--steps", "1", "--seed", "2",
            "--size", "128x64", "--fit", "pad", "--background", "black", "--format", "frames",
            "--out", tmp_path / "f")  # fmt: skip
    assert r.code == 0, r.err
    cli = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "f").glob("*.png"))])
    model = svd_cli.load("tiny", device="cpu")
    ours = model.animate_image(Image.open(EXAMPLES / "rocket.jpg"), frames=3, steps=1, seed=2, size=(128, 64),
                                  fit="pad", background="black").frames  # fmt: skip
    assert np.array_equal(cli, ours)


HEAVY_PACKAGES = {"torch", "diffusers", "transformers", "ray", "spandrel", "PIL"}


def _top_level_imports(path: Path) -> set[str]:
    """What importing `path` imports at once: its module-level imports (not TYPE_CHECKING's, not functions')."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(statements) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                found.update(_import_targets(node, package))
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + [s for h in node.handlers for s in h.body] + node.orelse + node.finalbody)

    visit(ast.parse(path.read_text()).body)
    return found


def _import_targets(node: ast.ImportFrom, package: str) -> list[str]:
    """The modules a `from ... import ...` loads (a submodule where the name is one)."""
    if not node.level:
        target = node.module or ""
    else:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    if not target.startswith("svd_cli"):
        return [target]
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in _MODULE_PATHS else target for a in node.names]


_MODULE_PATHS = {_module_name(p): p for p in MODULES}


def _loads_a_heavy_package(module: str, seen: set[str] | None = None) -> bool:
    """Whether importing `module` (its parent packages first) imports torch, diffusers, transformers, ray,
    spandrel or PIL, at any depth."""
    seen = set() if seen is None else seen
    if module not in _MODULE_PATHS:
        return module.split(".")[0] in HEAVY_PACKAGES
    if module in seen:
        return False
    seen.add(module)
    parts = module.split(".")
    parents = {".".join(parts[:i]) for i in range(2, len(parts))}
    return any(_loads_a_heavy_package(m, seen) for m in _top_level_imports(_MODULE_PATHS[module]) | parents)


def test_a_function_level_import_of_svd_cli_keeps_a_heavy_package_out_of_its_caller():
    """An svd_cli module is imported inside a function only to keep torch & co. from loading with the module
    that imports it (so `svd --help` stays instant): never when the imported module is light, or when the
    importing module loads a heavy package anyway."""
    needless = []
    for module, path in _MODULE_PATHS.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if not isinstance(inner, ast.ImportFrom | ast.Import):
                    continue
                package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
                targets = (
                    _import_targets(inner, package) if isinstance(inner, ast.ImportFrom)
                    else [a.name for a in inner.names]
                )  # fmt: skip
                ours = [t for t in targets if t.startswith("svd_cli")]
                if ours and not (any(map(_loads_a_heavy_package, ours)) and not _loads_a_heavy_package(module)):
                    needless.append(f"{module}:{inner.lineno}: {ast.unparse(inner)}")
    assert sorted(set(needless)) == []


def test_no_parameter_defaults_to_a_model_family():
    """The family travels with the model it was read from: no signature or field assumes one (`family="svd"`)."""
    from svd_cli.families import FAMILIES

    assumed = []
    for module, path in _MODULE_PATHS.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                defaults = [*node.args.defaults, *(d for d in node.args.kw_defaults if d is not None)]
                assumed += [f"{module}:{node.lineno} {node.name}" for d in defaults
                            if isinstance(d, ast.Constant) and d.value in FAMILIES]  # fmt: skip
            elif (  # a dataclass field
                isinstance(node, ast.AnnAssign) and isinstance(node.value, ast.Constant)
                and node.value.value in FAMILIES and ast.unparse(node.target) in ("kind", "family")
            ):  # fmt: skip
                assumed.append(f"{module}:{node.lineno} {ast.unparse(node.target)}")
    assert assumed == []
