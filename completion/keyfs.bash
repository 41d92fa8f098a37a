# SPDX-License-Identifier: MIT
# bash completion for keyfs(8): the commands and ctl's operations, both read
# from `keyfs --help` of the keyfs being completed (so they follow the
# control table), each command's options, and files after -c.  Installed as
# "keyfs" in bash-completion's completions folder (completion/meson.build).

# Reads `$1 --help` once per keyfs binary: _keyfs_commands gets the command
# names, _keyfs_ops ctl's operations.  Fails when the binary does not run.
_keyfs_load()
{
	local bin=$1 help line in_ctl= ctl= item
	local -a items

	[[ $bin == "$_keyfs_bin" && -n $_keyfs_commands ]] && return 0
	help=$("$bin" --help 2>/dev/null) || return 1
	_keyfs_commands=
	# A command's block starts "  NAME"; ctl's operations follow on its
	# first line and the next ones indented less than the descriptions.
	while IFS= read -r line; do
		if [[ $line =~ ^\ \ ([a-z][a-z-]*)(\ |$) ]]; then
			[[ " $_keyfs_commands " == *" ${BASH_REMATCH[1]} "* ]] ||
				_keyfs_commands+=" ${BASH_REMATCH[1]}"
			in_ctl=
			if [[ ${BASH_REMATCH[1]} == ctl ]]; then
				in_ctl=1
				ctl=${line#  ctl }
			fi
		elif [[ -n $in_ctl && $line =~ ^\ {3,19}[^\ ] ]]; then
			ctl+=${line#"${line%%[! ]*}"}
		else
			in_ctl=
		fi
	done <<<"$help"
	_keyfs_ops=
	IFS='|' read -r -a items <<<"$ctl"
	for item in "${items[@]}"; do
		item=${item# }
		_keyfs_ops+=" ${item%% *}"
	done
	_keyfs_bin=$bin
}

# Files (and folders to go through) matching $1 into COMPREPLY.
_keyfs_files()
{
	compopt -o filenames 2>/dev/null
	mapfile -t COMPREPLY < <(compgen -f -- "$1")
}

# Folders matching $1 into COMPREPLY.
_keyfs_dirs()
{
	compopt -o filenames 2>/dev/null
	mapfile -t COMPREPLY < <(compgen -d -- "$1")
}

# The words of $2 that start with $1 into COMPREPLY.
_keyfs_words()
{
	mapfile -t COMPREPLY < <(compgen -W "$2" -- "$1")
}

_keyfs()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev= cmd= word opts i cmdi=0
	local -a operands=()

	COMPREPLY=()
	((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
	_keyfs_load "${COMP_WORDS[0]}" || return 0
	case $prev in
	-c | --config | --new-master | --recovery-key | --public | --private)
		_keyfs_files "$cur"
		return 0
		;;
	--mount)
		_keyfs_dirs "$cur"
		return 0
		;;
	-o | --timeout | --from)
		return 0
		;;
	esac
	# The command: the first word after the options that come before it.
	for ((i = 1; i < COMP_CWORD; i++)); do
		word=${COMP_WORDS[i]}
		case $word in
		-c | --config) ((i++)) ;;
		-*) ;;
		*)
			cmd=$word
			cmdi=$i
			break
			;;
		esac
	done
	if [[ -z $cmd ]]; then
		if [[ $cur == -* ]]; then
			_keyfs_words "$cur" "-c --config --help --version"
		else
			_keyfs_words "$cur" "$_keyfs_commands"
		fi
		return 0
	fi
	# Its operands so far, without the options and their values.
	for ((i = cmdi + 1; i < COMP_CWORD; i++)); do
		word=${COMP_WORDS[i]}
		case $word in
		-c | --config | --mount | -o | --timeout | --from | --new-master | \
			--recovery-key | --public | --private)
			((i++))
			;;
		-*) ;;
		*) operands+=("$word") ;;
		esac
	done
	if [[ $cur == -* ]]; then
		case $cmd in
		mount) opts="-c -f -o" ;;
		ctl)
			opts="--mount -c"
			[[ ${operands[0]} == status ]] && opts+=" --json"
			[[ ${operands[0]} == wait ]] && opts+=" --timeout --from"
			;;
		backup) opts="-c" ;;
		restore) opts="--offline --recovery-key -c" ;;
		recovery-keygen) opts="--public --private" ;;
		audit) opts="--no-anchor -c" ;;
		rekey) opts="--new-master -c" ;;
		export-env) opts="--mount -c" ;;
		cluster)
			opts="-c"
			[[ ${operands[0]} == init ]] && opts+=" --from-state"
			;;
		*) opts= ;;
		esac
		_keyfs_words "$cur" "$opts --help"
		return 0
	fi
	case $cmd:${#operands[@]} in
	ctl:0) _keyfs_words "$cur" "$_keyfs_ops" ;;
	ctl:1)
		[[ ${operands[0]} == rotate ]] &&
			_keyfs_words "$cur" "stage promote abort"
		;;
	ctl:2)
		[[ ${operands[0]} == restore || ${operands[0]} == prune ||
			${operands[0]} == retire ]] &&
			_keyfs_words "$cur" "force"
		;;
	backup:0) _keyfs_words "$cur" "list verify" ;;
	backup:1) [[ ${operands[0]} == verify ]] && _keyfs_files "$cur" ;;
	restore:0 | audit:1) _keyfs_files "$cur" ;;
	restore:1) _keyfs_words "$cur" "force" ;;
	audit:0) _keyfs_words "$cur" "verify" ;;
	cluster:0) _keyfs_words "$cur" "init status" ;;
	mount:0) _keyfs_dirs "$cur" ;;
	validate:0) _keyfs_words "$cur" "-" ;;
	esac
	return 0
}

complete -F _keyfs keyfs
