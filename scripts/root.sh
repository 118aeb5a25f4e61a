# Sourced by the scripts here: they need root (namespaces, netlink, apt-get). As root they run
# as they are; as a user with sudo they ask sudo once; without either they say so.
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "$0: run this as root (sudo is not installed)" >&2; exit 1; }
  exec sudo --preserve-env=PYTHON,CI bash "$0" "$@"
fi
