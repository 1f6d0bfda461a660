"""A fault-injection engine: a git repo whose `llama-bench` hangs, crashes or prints garbage.

Only for fault tests (the standards allow a fake llama-bench there and nowhere else). It
goes through the real pipeline: real git checkout, real cmake build, real process kill.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

CMAKE = """cmake_minimum_required(VERSION 3.14)
project(fake_engine C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(llama-bench bench.c)
add_executable(llama-quantize bench.c)
"""

PROGRAMS = {
    # sleeps forever in a child too, so the test sees that the whole group is killed
    "hang": '#include <unistd.h>\nint main(void){ if (fork()==0) { for(;;) sleep(1); } for(;;) sleep(1); }\n',
    "crash": '#include <stdio.h>\n#include <stdlib.h>\nint main(void){ fprintf(stderr, "GGML_ASSERT failed\\n"); abort(); }\n',
    "garbage": '#include <stdio.h>\nint main(void){ printf("[\\n  {\\"build_commit\\": oops not json\\n"); return 0; }\n',
    "lone-bracket": '#include <stdio.h>\nint main(void){ printf("[\\n"); fprintf(stderr, "failed to load model\\n"); return 1; }\n',
    "broken": 'int main(void) { this is not C }\n',
}


def _git(repo: Path, *args: str) -> None:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env=env)


def make_fake_engine_repo(path: Path) -> Path:
    """One branch per behaviour in PROGRAMS."""
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "--quiet", "--initial-branch=main")
    (path / "CMakeLists.txt").write_text(CMAKE)
    (path / "bench.c").write_text("int main(void){return 0;}\n")
    _git(path, "add", ".")
    _git(path, "commit", "--quiet", "-m", "base")
    for name, program in PROGRAMS.items():
        _git(path, "checkout", "--quiet", "-b", name, "main")
        (path / "bench.c").write_text(program)
        _git(path, "commit", "--quiet", "-am", name)
    _git(path, "checkout", "--quiet", "main")
    return path
