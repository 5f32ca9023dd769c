# tests/need_pyenv.sh, sourced by the shell tests that run Python (from the repository root):
# sets $py to the pinned environment's python (tools/pyenv.sh), or ends the test: SKIP (77)
# when the environment cannot be made here (no python3, venv or network), FAIL when
# pyenv.sh breaks in another way.
zp_pyenv_err=$(mktemp /tmp/zp_pyenv_err.XXXXXX)
py=$(bash tools/pyenv.sh 2>"$zp_pyenv_err")
zp_pyenv_rc=$?
if [ $zp_pyenv_rc -eq 2 ]; then
    echo "SKIP no Python environment: $(tail -n 1 "$zp_pyenv_err")"
    rm -f "$zp_pyenv_err"
    exit 77
fi
if [ $zp_pyenv_rc -ne 0 ]; then
    echo "FAIL: tools/pyenv.sh exit $zp_pyenv_rc"
    cat "$zp_pyenv_err"
    rm -f "$zp_pyenv_err"
    exit 1
fi
rm -f "$zp_pyenv_err"
