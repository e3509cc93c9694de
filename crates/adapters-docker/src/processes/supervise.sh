dir=$1 limit=$2 timeout=$3 workdir=$4
shift 4
segment=$((limit / 8))
[ "$segment" -le 1048576 ] || segment=1048576
[ "$segment" -ge 4096 ] || segment=4096
block=65536
[ "$block" -le "$segment" ] || block=$segment
count=$((segment / block))
number() {
  value=${1#"${1%%[!0]*}"}
  printf '%s' "${value:-0}"
}
drop() {
  while [ "$#" -gt 1 ] && [ "$((offset - $(number "$1")))" -gt "$limit" ]; do
    rm -f "$stream/$1"
    shift
  done
  kept="$*"
}
record() {
  stream=$1
  offset=0
  kept=
  while :; do
    name=$(printf '%020d' "$offset")
    dd of="$stream/$name" bs="$block" count="$count" 2>/dev/null
    written=$?
    size=$(wc -c < "$stream/$name" 2>/dev/null)
    size=${size:-0}
    if [ "$size" -eq 0 ]; then
      rm -f "$stream/$name" 2>/dev/null
      [ "$written" = 0 ] && return
      # /tmp is full: what dd read is lost; the oldest kept segment makes room, or, with
      # nothing to drop, a block of output is read and discarded.
      set -- $kept
      if [ "$#" -gt 1 ]; then
        rm -f "$stream/$1"
        shift
        kept="$*"
      else
        dd bs="$block" count=1 of=/dev/null 2>/dev/null
      fi
      continue
    fi
    offset=$((offset + size))
    drop $kept "$name"
  done
}
record "$dir/out" < "$dir/out.pipe" &
record "$dir/err" < "$dir/err.pipe" &
sleep 2147483647 > "$dir/stdin" &
printf '%s\n' "$!" > "$dir/stdin.holder"
timer=
if [ "$timeout" != 0 ]; then
  {
    sleep "$timeout"
    if [ ! -e "$dir/exit" ]; then
      printf '%s timeout\n' "$(date +%s)" > "$dir/killed.tmp"
      mv "$dir/killed.tmp" "$dir/killed"
      kill -KILL 0
    fi
  } < /dev/null &
  timer=$!
fi
(
  cd -- "$workdir" 2>/dev/null || { printf 'sandkeeper: cannot enter the working directory %s\n' "$workdir" >&2; exit 126; }
  exec "$@"
) < "$dir/stdin" > "$dir/out.pipe" 2> "$dir/err.pipe" &
wait "$!"
code=$?
[ -z "$timer" ] || kill "$timer" 2>/dev/null
kill "$(cat "$dir/stdin.holder")" 2>/dev/null
status="$code $(date +%s)"
# A full /tmp must not lose the exit status: the oldest output makes room for it.
until printf '%s\n' "$status" 2>/dev/null > "$dir/exit.tmp" && mv "$dir/exit.tmp" "$dir/exit"; do
  oldest=
  for segment in "$dir"/out/[0-9]* "$dir"/err/[0-9]*; do
    [ -e "$segment" ] && oldest=$segment && break
  done
  [ -n "$oldest" ] || break
  rm -f "$oldest"
done
wait
