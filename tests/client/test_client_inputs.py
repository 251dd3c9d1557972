"""The client's own logic, without a server: prompts files, --param values, result names, and that
the client imports none of the server's libraries."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bulkgen_client.cli import main as submit_main
from bulkgen_client.inputs import (
    InputFile,
    UsageError,
    collect_images,
    match_rows,
    parse_param,
    read_csv,
    read_jsonl,
    read_prompts,
)
from bulkgen_client.naming import OutputNamer, stem_of

HEAVY = ("torch", "flask", "celery", "sqlalchemy", "app", "web", "tasks", "providers")


def test_client_imports_none_of_the_server() -> None:
    code = (
        "import json, sys\n"
        "import bulkgen_client, bulkgen_client.cli\n"
        "from bulkgen_client import Client\n"
        "Client('http://127.0.0.1:9')\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules = json.loads(out)
    assert "requests" in modules and "rich" in modules
    assert [m for m in modules if m.split(".")[0] in HEAVY] == []


def test_bulkgen_submit_dispatches_before_the_server_is_imported() -> None:
    """`bulkgen submit` goes through bulkgen_stack.cli:main (the console script) and still loads none of it."""
    code = (
        "import json, sys\n"
        "from bulkgen_stack.cli import main\n"
        "try:\n"
        "    main(['submit', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "usage: bulkgen submit PROVIDER PATH" in r.stdout
    modules = json.loads(r.stderr)
    assert "bulkgen_client.cli" in modules
    assert [
        m for m in modules if m.split(".")[0] in HEAVY and m not in ("bulkgen_stack", "bulkgen_stack.cli")
    ] == []


def test_csv_rows_with_prompt_item_fields_and_params() -> None:
    rows = read_csv(
        "\ufefffile,Prompt,seed,prompts,steps,guidance,fail,note\n"
        "cat.jpg,a cat on a mat,7,cat; mat,30,4.5,,hello\n"
        'sub/dog.png,"a dog, running",,,,,fatal,\n'
        ",,,,,,,\n"
        "bird.webp,,,,true,,,\n"
    )
    assert set(rows) == {"cat.jpg", "sub/dog.png", "bird.webp"}
    assert rows["cat.jpg"].entry("K1") == {
        "key": "K1",
        "prompt": "a cat on a mat",
        "seed": 7,
        "prompts": ["cat", "mat"],
        "params": {"steps": 30, "guidance": 4.5, "note": "hello"},
    }
    assert rows["sub/dog.png"].entry("K2") == {
        "key": "K2",
        "prompt": "a dog, running",
        "params": {"fail": "fatal"},
    }
    # No prompt of its own: the job's --prompt applies.
    assert rows["bird.webp"].entry("K3") == {"key": "K3", "params": {"steps": True}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prompt\na cat\n", "one of them file/name/key/filename"),
        ("file,prompt\ncat.jpg,one\ncat.jpg,two\n", "line 3: cat.jpg already has a row (line 2)"),
        ("file,prompt\n,a cat\n", "line 2: no file name"),
        ("file,prompt\ncat.jpg,a,b\n", "line 2: more cells than columns"),
        ("file,prompt,Prompt\ncat.jpg,a,b\n", "a column appears twice"),
    ],
)
def test_csv_mistakes_name_the_line(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        read_csv(text)


def test_name_and_key_columns_name_the_file() -> None:
    assert list(read_csv("name,prompt\n./a/cat.jpg,x\n")) == ["a/cat.jpg"]
    assert list(read_csv("key,prompt\ncat,x\n")) == ["cat"]
    # The first name column filled in counts, as in the server's own prompts files.
    assert list(read_csv("file,filename,prompt\n,dog.png,x\n")) == ["dog.png"]


def test_jsonl_rows() -> None:
    rows = read_jsonl(
        '{"file": "cat.jpg", "prompt": "a cat", "params": {"steps": 30}}\n'
        "\n"
        '{"name": "dog.png", "prompts": "dog", "seed": 3, "negative_prompt": "blur"}\n'
        '{"file": "bird.png", "steps": 20, "params": {"guidance": 3}}\n'
    )
    assert rows["cat.jpg"].entry("K") == {"key": "K", "prompt": "a cat", "params": {"steps": 30}}
    assert rows["dog.png"].entry("K") == {
        "key": "K",
        "prompts": ["dog"],
        "seed": 3,
        "negative_prompt": "blur",
    }
    # Fields besides the known ones are parameters, as CSV columns are.
    assert rows["bird.png"].entry("K") == {"key": "K", "params": {"steps": 20, "guidance": 3}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"file": "a.png"}\n{"file": "a.png", "prompt": 3}', "line 2: prompt must be a string"),
        ('{"file": "a.png", "params": [1]}', "params must be an object"),
        ("[1, 2]", "expected an object"),
        ('{"file": "a.png"', "line 1: not JSON"),
        ('{"prompt": "x"}', "no file name"),
    ],
)
def test_jsonl_mistakes_name_the_line(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        read_jsonl(text)


def test_prompts_file_kind_by_extension_or_content(tmp_path: Path) -> None:
    csv_file = tmp_path / "p.txt"
    csv_file.write_text("file,prompt\ncat.jpg,a cat\n")
    jsonl_file = tmp_path / "p.data"
    jsonl_file.write_text('{"file": "cat.jpg", "prompt": "a cat"}\n')
    for path in (csv_file, jsonl_file):
        assert read_prompts(path)["cat.jpg"].fields == {"prompt": "a cat"}
    with pytest.raises(UsageError, match="missing.csv"):
        read_prompts(tmp_path / "missing.csv")


def test_rows_match_by_path_then_file_name_then_stem() -> None:
    files = [InputFile(Path(p), p) for p in ("a/dup.png", "b/dup.png", "cat.jpg", "x/bird.webp", "plain.png")]
    rows = read_csv("file,prompt\nb/dup.png,second\ndup.png,any dup\ncat,by stem\nbird.webp,by name\n")
    got = [r.fields["prompt"] if r else None for r in match_rows(files, rows)]
    assert got == ["any dup", "second", "by stem", "by name", None]


def test_a_row_for_no_input_is_an_error() -> None:
    files = [InputFile(Path("cat.jpg"), "cat.jpg")]
    with pytest.raises(UsageError, match=r"not among the inputs: dgo.png \(line 3\)"):
        match_rows(files, read_csv("file,prompt\ncat.jpg,a cat\ndgo.png,a dog\n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps=30", ("steps", 30)),
        ("guidance=4.5", ("guidance", 4.5)),
        ("tiling=false", ("tiling", False)),
        ("size=[832, 480]", ("size", [832, 480])),
        ("fail=fatal", ("fail", "fatal")),
        ("ratio=1280:720", ("ratio", "1280:720")),
        ("x=NaN", ("x", "NaN")),
        ('name="007"', ("name", "007")),
        ("empty=", ("empty", "")),
        ("eq=a=b", ("eq", "a=b")),
    ],
)
def test_param_values_are_json_when_they_parse(text: str, expected: tuple) -> None:
    assert parse_param(text) == expected


@pytest.mark.parametrize("text", ["steps", "=3"])
def test_param_without_a_name_is_an_error(text: str) -> None:
    with pytest.raises(UsageError):
        parse_param(text)


def test_folders_are_walked_for_images(tmp_path: Path) -> None:
    for rel in ("b.PNG", "a.jpg", "sub/c.jpeg", "sub/deep/d.webp", "notes.txt", ".hidden/e.png", "._a.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "odd.gif").write_bytes(b"x")
    found = collect_images([str(tmp_path), str(tmp_path / "a.jpg"), str(tmp_path / "odd.gif")])
    # A file named as well as found in a folder counts once; a file named outright is sent as it is.
    assert [f.rel for f in found] == ["a.jpg", "b.PNG", "sub/c.jpeg", "sub/deep/d.webp", "odd.gif"]
    with pytest.raises(UsageError, match="no such file"):
        collect_images([str(tmp_path / "nope")])
    with pytest.raises(UsageError, match="no images"):
        (tmp_path / "empty").mkdir()
        collect_images([str(tmp_path / "empty")])


def test_result_names_follow_inputs_and_never_collide(tmp_path: Path) -> None:
    (tmp_path / "old.mp4").write_bytes(b"keep")
    namer = OutputNamer(tmp_path)
    video = {"key": "outputs/j/i/1/video.mp4", "role": "video", "content_type": "video/mp4"}
    poster = {"key": "outputs/j/i/1/poster.png", "role": "poster", "content_type": "image/png"}
    assert namer.reserve("cat.jpg", [video, poster]) == ["cat.mp4", "cat.poster.png"]
    assert namer.reserve("other/cat.png", [video, poster]) == ["cat-2.mp4", "cat-2.poster.png"]
    assert namer.reserve("CAT.webp", [video]) == ["CAT-3.mp4"]  # case-insensitive file systems
    assert namer.reserve("old.jpg", [video]) == ["old-2.mp4"]  # on disk already
    # Outputs alike in role and type, and one with no extension in its key.
    mask = {"key": "outputs/j/i/1/m.png", "role": "mask", "content_type": "image/png"}
    blob = {"key": "outputs/j/i/1/result", "role": None, "content_type": "application/json"}
    assert namer.reserve("seg.png", [mask, mask, mask, blob]) == [
        "seg.png",
        "seg.mask.png",
        "seg.3.mask.png",
        "seg.4.json",
    ]


def test_stems_are_safe_file_names() -> None:
    assert stem_of("photos/cat.final.jpg") == "cat.final"
    assert stem_of("inputs/ab/ab12cd.png") == "ab12cd"
    assert stem_of('a:b*c?"d.png') == "a_b_c__d"
    assert stem_of(".png") == "png"
    assert stem_of("...") == "item"


def test_usage_errors_exit_2_before_any_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert submit_main(["echo", str(tmp_path / "missing"), "--url", "http://127.0.0.1:9"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "a.png").write_bytes(b"x")
    assert submit_main(["echo", str(tmp_path), "--param", "oops", "--url", "http://127.0.0.1:9"]) == 2
    assert "--param 'oops'" in capsys.readouterr().err
    # Nothing listens on port 9: the API error also ends in status 2, naming the address.
    assert submit_main(["echo", str(tmp_path), "--url", "http://127.0.0.1:9"]) == 2
    assert "unreachable" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        submit_main(["echo"])
    assert exc.value.code == 2
