dir=$1
[ -s "$dir/meta" ] || exit 3
case $2 in
  stdin)
    cat 1<> "$dir/stdin"
    ;;
  close)
    read -r holder < "$dir/stdin.holder" 2>/dev/null && kill "$holder" 2>/dev/null
    exit 0
    ;;
  kill)
    if [ ! -e "$dir/exit" ] && [ ! -e "$dir/killed" ]; then
      printf '%s deleted\n' "$(date +%s)" > "$dir/killed.tmp"
      mv "$dir/killed.tmp" "$dir/killed"
    fi
    read -r session < "$dir/session"
    read -r mark < "$dir/mark"
    printf '%s %s\n' "$session" "$mark"
    ;;
esac
