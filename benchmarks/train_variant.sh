# Sourced by the quality-suite scripts: `train NAME FLAGS...` trains one variant with the caller's COMMON flags
# into RUNS/NAME (BIN, found below, holds langbrt-train). A variant whose RUNS/NAME/final exists is not
# retrained, so an interrupted suite resumes where it stopped; a failed variant is reported and the others
# still run, and `exit_if_any_failed` (the script's last line) names them and exits 1, so a suite with a
# variant missing never passes for a whole one; Ctrl-C (langbrt-train's exit 130) stops the script.

# Where langbrt-train and langbrt-eval are: $BIN if set, else the quick start's .venv/bin, else the ones on PATH
# (an activated virtualenv elsewhere, a conda env); a fixed .venv/bin failed every variant outside the quick
# start's layout ("No such file or directory", then "FAILED").
if [[ -z ${BIN:-} ]]; then
    if [[ -x .venv/bin/langbrt-train ]]; then
        BIN=.venv/bin
    elif command -v langbrt-train > /dev/null; then
        BIN=$(dirname "$(command -v langbrt-train)")
    else
        echo "no langbrt-train in .venv/bin or on PATH: install LangBRT (README, Quick start), activate its" \
             "virtualenv, or set BIN to the folder holding langbrt-train" >&2
        exit 2
    fi
fi

FAILED_VARIANTS=()

train() {  # NAME FLAGS...
    local name=$1
    shift
    if [[ -d "$RUNS/$name/final" ]]; then
        echo "== $name: $RUNS/$name/final exists, not retrained"
        return
    fi
    if [[ -e "$RUNS/$name" ]]; then  # an interrupted variant: langbrt-train refuses a folder holding a run
        echo "== $name: $RUNS/$name has no final/, training it again from the start"
        rm -rf "${RUNS:?}/$name"
    fi
    echo "== $name: langbrt-train ${COMMON[*]} $* --output $RUNS/$name"
    local start=$SECONDS status=0
    "$BIN/langbrt-train" "${COMMON[@]}" "$@" --output "$RUNS/$name" || status=$?
    if ((status == 0)); then
        echo "== $name: $((SECONDS - start)) s"
    elif ((status == 130)); then  # Ctrl-C: langbrt-train exits 130, not by SIGINT, so bash alone would go on
        echo "== $name: interrupted; run the script again to go on (finished variants are kept)"
        exit 130
    else
        echo "== $name: FAILED after $((SECONDS - start)) s, left out of the suite"
        FAILED_VARIANTS+=("$name")
    fi
}

exit_if_any_failed() {
    if ((${#FAILED_VARIANTS[@]})); then
        echo "== failed, not in the results: ${FAILED_VARIANTS[*]}"
        exit 1
    fi
}
