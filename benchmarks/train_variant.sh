# Sourced by the quality-suite scripts: `train NAME FLAGS...` trains one variant with the caller's COMMON flags
# into RUNS/NAME (BIN holds langbrt-train). A variant whose RUNS/NAME/final exists is not retrained, so an
# interrupted suite resumes where it stopped; a failed variant is reported and the others still run.

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
    local start=$SECONDS
    if "$BIN/langbrt-train" "${COMMON[@]}" "$@" --output "$RUNS/$name"; then
        echo "== $name: $((SECONDS - start)) s"
    else
        echo "== $name: FAILED after $((SECONDS - start)) s, left out of the suite"
    fi
}
