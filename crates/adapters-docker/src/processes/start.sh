root=$1 id=$2 max=$3
shift 3
mkdir -p "$root" || exit 70
running=0
for entry in "$root"/*; do
  [ -s "$entry/pid" ] || continue
  [ -e "$entry/exit" ] || [ -e "$entry/killed" ] && continue
  read -r pid < "$entry/pid" && kill -0 "$pid" 2>/dev/null && running=$((running + 1))
done
if [ "$running" -ge "$max" ]; then
  printf '%s processes are running\n' "$running" >&2
  exit 75
fi
dir=$root/$id
mkdir "$dir" "$dir/out" "$dir/err" || exit 70
{
  printf '%s\n' "$1" > "$dir/meta" &&
    printf '%s\n' "$$" > "$dir/session" &&
    printf '%s\n' "$SANDKEEPER_EXEC_ID" > "$dir/mark" &&
    mkfifo "$dir/stdin" "$dir/out.pipe" "$dir/err.pipe"
} || { rm -rf "$dir"; printf 'cannot write the process directory in /tmp (is it full?)\n' >&2; exit 70; }
shift
supervisor=$1
shift
sh -c "$supervisor" sandkeeper-process "$dir" "$@" < /dev/null > /dev/null 2>&1 &
printf '%s\n' "$!" > "$dir/pid.tmp"
mv "$dir/pid.tmp" "$dir/pid"
