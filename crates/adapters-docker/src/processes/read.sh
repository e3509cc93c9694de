root=$1 max=$2
shift 2
number() {
  value=${1#"${1%%[!0]*}"}
  printf '%s' "${value:-0}"
}
state() {
  if [ -s "$1/exit" ]; then
    read -r code ended < "$1/exit"
    printf 'S exited %s %s\n' "$code" "$ended"
  elif [ -s "$1/killed" ]; then
    read -r ended why < "$1/killed"
    printf 'S killed - %s\n' "$ended"
  elif [ -s "$1/pid" ] && read -r pid < "$1/pid" && kill -0 "$pid" 2>/dev/null; then
    printf 'S running - -\n'
  elif [ -s "$1/pid" ]; then
    printf 'S killed - -\n'
  else
    printf 'S running - -\n'
  fi
}
emit() {
  tag=$1 stream=$2 want=$3 room=$max
  first= end=0 plan= total=0
  for file in "$stream"/[0-9]*; do
    [ -e "$file" ] || continue
    start=$(number "${file##*/}")
    size=$(wc -c < "$file") || continue
    if [ -z "$first" ]; then
      first=$start
      [ "$want" -ge "$first" ] || want=$first
    fi
    end=$((start + size))
    [ "$end" -gt "$want" ] && [ "$room" -gt 0 ] || continue
    skip=0
    [ "$want" -le "$start" ] || skip=$((want - start))
    take=$((size - skip))
    [ "$take" -le "$room" ] || take=$room
    plan="$plan $file $skip $take"
    room=$((room - take))
    total=$((total + take))
  done
  [ -n "$first" ] || first=0
  [ "$want" -le "$end" ] || want=$end
  printf '%s %s %s %s %s\n' "$tag" "$first" "$end" "$want" "$total"
  set -- $plan
  while [ "$#" -ge 3 ]; do
    tail -c "+$(($2 + 1))" "$1" | head -c "$3"
    shift 3
  done
}
case $1 in
  list)
    for dir in "$root"/*; do
      [ -s "$dir/meta" ] || continue
      printf 'P %s\n' "${dir##*/}"
      state "$dir"
      printf 'M '
      cat "$dir/meta"
    done
    ;;
  logs)
    dir=$root/$2
    [ -s "$dir/meta" ] || exit 3
    state "$dir"
    emit O "$dir/out" "$3"
    emit E "$dir/err" "$4"
    ;;
esac
