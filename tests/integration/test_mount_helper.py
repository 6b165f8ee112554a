"""The mount helper, fstab, the systemd unit and the install layout, driven for real:
`mount.ipcfs SOURCE MNT -o ...`, `mount -t ipcfs`, an fstab line through `mount -T`,
`umount` / `fusermount3 -u`, `systemd-analyze verify`, and `cmake --install` with DESTDIR.

Contract: spec/interface.md, "Running it". The helper execs ipcfs, which goes to the
background once the mount is ready, so the daemon is not our child: it is found by scanning
/proc/*/cmdline for the test's unique temporary mountpoint (never by name), and every test
unmounts in a finally block (fusermount3 -u -z as the fallback) and waits for the daemon to
go. Every blocking step has a deadline; waiting is polling a condition with a deadline."""
import contextlib
import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import IPCFS_BIN, REPO, is_mounted, wait_until
from ipcfs_helpers import (daemon_pids, exercise, kill_pids, lazy_unmount, read_status,
                           run_to_files)
from ipcfs_helpers import no_mount_left  # noqa: F401 (autouse fixture: importing applies it)

HELPER_SRC = REPO / "mount-helpers" / "mount.ipcfs"
UNIT_SRC = REPO / "mount-helpers" / "ipcfs@.service"
SBIN_HELPER = Path("/sbin/mount.ipcfs")
BINDIR_PLACEHOLDER = "@IPCFS_INSTALL_BINDIR@"

RUN_DEADLINE_S = 20.0   # a command that should return promptly (mount, umount, verify)
EXIT_DEADLINE_S = 10.0  # a daemon whose mount went away
INSTALL_DEADLINE_S = 120.0
BASE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # has no ipcfs (checked where it matters)

run = functools.partial(run_to_files, timeout=RUN_DEADLINE_S)  # run(argv, tmp_path, tag, env=)


# ---------------------------------------------------------------- helpers

def mount_entry(mountpoint):
    """(source, fstype, options) of the mount on mountpoint from /proc/self/mounts, or None."""
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == target:
                return fields[0], fields[2], fields[3]
    return None


def cleanup_mount(mountpoint):
    """Whatever state it is in: unmount (lazily if need be) and make sure its daemon goes."""
    lazy_unmount(mountpoint)
    deadline = time.monotonic() + EXIT_DEADLINE_S
    while daemon_pids(mountpoint) and time.monotonic() < deadline:
        time.sleep(0.01)
    kill_pids(daemon_pids(mountpoint))


@contextlib.contextmanager
def mounted_dir(tmp_path, name="mnt"):
    """A fresh mountpoint; whatever the test did, nothing stays mounted on it."""
    mnt = tmp_path / name
    mnt.mkdir()
    try:
        yield mnt
    finally:
        cleanup_mount(mnt)


def assert_daemon_exits(mnt):
    wait_until(lambda: not daemon_pids(mnt), timeout=EXIT_DEADLINE_S,
               what=f"the ipcfs daemon of {mnt} to exit")


def assert_backgrounded_mount(mnt, max_bytes=None):
    """The helper returned with the mount ready and a daemon (not our child) serving it."""
    assert is_mounted(mnt), "the helper returned before the mount was ready"
    pids = daemon_pids(mnt)
    assert len(pids) == 1, f"expected one ipcfs daemon for {mnt}, found {pids}"
    with open(f"/proc/{pids[0]}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    assert ppid != os.getpid(), "ipcfs did not go to the background"
    exercise(mnt, "helper-check")
    if max_bytes is not None:
        assert read_status(mnt)["max_bytes"] == str(max_bytes)
    return pids[0]


@pytest.fixture
def bin_dir(tmp_path):
    """A directory holding `ipcfs` (a symlink to $IPCFS_BIN) to put on PATH."""
    d = tmp_path / "bin"
    d.mkdir()
    (d / "ipcfs").symlink_to(os.path.realpath(IPCFS_BIN))
    return d


@pytest.fixture
def env_with_ipcfs(bin_dir):
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}:{BASE_PATH}"
    return env


@pytest.fixture
def env_without_ipcfs():
    if shutil.which("ipcfs", path=BASE_PATH):
        pytest.skip(f"an ipcfs is installed on {BASE_PATH}")
    env = dict(os.environ)
    env["PATH"] = BASE_PATH
    return env


def _same_helper(installed):
    """An installed helper is ours if it differs from the source only in the filled-in
    install directory."""
    strip = lambda text: re.sub(r"^install_bindir=.*$", "", text, flags=re.M)  # noqa: E731
    try:
        return strip(installed.read_text()) == strip(HELPER_SRC.read_text())
    except OSError:
        return False


@pytest.fixture(scope="module")
def sbin_helper(tmp_path_factory):
    """Makes mount(8) find mount.ipcfs, which it looks for only in /sbin, /sbin/fs.d and
    /sbin/fs. We are root on a throwaway CI machine, so a copy of the helper goes to
    /sbin/mount.ipcfs for the duration of this module, only if none is there already, and is
    removed again in the finally block. If one is there already (an installed ipcfs), these
    tests skip: it would run some other ipcfs, and it is not ours to replace.

    mount(8) runs helpers with its own standard PATH, so the copy is filled in the way
    `cmake --install` fills it in: with the directory ipcfs is installed to (here a
    directory holding a symlink to $IPCFS_BIN)."""
    if os.geteuid() != 0:
        pytest.skip("mount -t ipcfs needs root (to place /sbin/mount.ipcfs)")
    if shutil.which("mount") is None:
        pytest.skip("no mount(8)")
    if os.path.lexists(SBIN_HELPER):
        pytest.skip(f"{SBIN_HELPER} exists already (installed?); not touching it")
    bin_dir = tmp_path_factory.mktemp("sbin-helper-bin")
    (bin_dir / "ipcfs").symlink_to(os.path.realpath(IPCFS_BIN))
    text = HELPER_SRC.read_text()
    assert f"install_bindir='{BINDIR_PLACEHOLDER}'" in text
    tmp = SBIN_HELPER.with_name(f".mount.ipcfs.{os.getpid()}")
    try:
        tmp.write_text(text.replace(BINDIR_PLACEHOLDER, str(bin_dir)))
        os.chmod(tmp, 0o755)
        os.rename(tmp, SBIN_HELPER)
        yield SBIN_HELPER
    finally:
        for path in (tmp, SBIN_HELPER):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


# ---------------------------------------------------------------- the helper, called directly

def test_helper_mounts_in_background_with_options_and_umount_unmounts(tmp_path, env_with_ipcfs):
    with mounted_dir(tmp_path) as mnt:
        opts = "rw,defaults,auto,nouser,_netdev,nofail,x-systemd.automount,comment=x,max_bytes=1G"
        rc, out, err = run([HELPER_SRC, "ipcfs", mnt, "-o", opts], tmp_path, "helper",
                           env=env_with_ipcfs)
        assert rc == 0, out + err
        assert_backgrounded_mount(mnt, max_bytes=1 << 30)
        source, fstype, _ = mount_entry(mnt)
        assert (source, fstype) == ("ipcfs", "fuse.ipcfs")

        rc, out, err = run(["umount", mnt], tmp_path, "umount")
        assert rc == 0, out + err
        assert not is_mounted(mnt)
        assert_daemon_exits(mnt)


def test_helper_mount_is_unmounted_by_fusermount3(tmp_path, env_with_ipcfs):
    with mounted_dir(tmp_path) as mnt:
        rc, out, err = run([HELPER_SRC, "ipcfs", mnt, "-o", "max_msg_size=4K"], tmp_path,
                           "helper", env=env_with_ipcfs)
        assert rc == 0, out + err
        assert_backgrounded_mount(mnt)
        os.mkdir(mnt / "mailboxes" / "small")
        assert os.getxattr(mnt / "mailboxes" / "small", "user.ipc.max_msg_size") == b"4096"

        rc, out, err = run(["fusermount3", "-u", mnt], tmp_path, "fusermount")
        assert rc == 0, out + err
        assert not is_mounted(mnt)
        assert_daemon_exits(mnt)


def test_helper_accepts_mount_flags_and_bundled_options(tmp_path, env_with_ipcfs):
    # mount(8) passes -s (sloppy), -n (no mtab), -v (verbose) separately or bundled.
    with mounted_dir(tmp_path) as mnt:
        rc, out, err = run([HELPER_SRC, "ipcfs", mnt, "-sn", "-o", "noauto", "-omax_bytes=2M"],
                           tmp_path, "helper", env=env_with_ipcfs)
        assert rc == 0, out + err
        assert_backgrounded_mount(mnt, max_bytes=2 << 20)


def test_helper_fake_verbose_shows_filtered_options_and_mounts_nothing(tmp_path, env_with_ipcfs,
                                                                       bin_dir):
    with mounted_dir(tmp_path) as mnt:
        opts = ("rw,defaults,auto,noauto,user,nouser,users,_netdev,nofail,user=alice,"
                "x-systemd.automount,x-systemd.device-timeout=5,comment=systemd.x,"
                "max_bytes=1G,noexec,allow_other,log_level=warn")
        rc, out, err = run([HELPER_SRC, "ipcfs", mnt, "-f", "-v", "-o", opts], tmp_path,
                           "fake", env=env_with_ipcfs)
        assert rc == 0, out + err
        assert not is_mounted(mnt)
        assert not daemon_pids(mnt)
        line = next(ln for ln in err.splitlines() if "running" in ln)
        argv = line.split("running", 1)[1].split()
        assert argv == [str(bin_dir / "ipcfs"), "-o",
                        "max_bytes=1G,noexec,allow_other,fsname=ipcfs,subtype=ipcfs",
                        "--log-level", "warn", str(mnt)]


def test_helper_finds_ipcfs_beside_itself(tmp_path, env_without_ipcfs):
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    helper = sbin / "mount.ipcfs"
    shutil.copyfile(HELPER_SRC, helper)
    os.chmod(helper, 0o755)
    (sbin / "ipcfs").symlink_to(os.path.realpath(IPCFS_BIN))
    with mounted_dir(tmp_path) as mnt:
        rc, out, err = run([helper, "ipcfs", mnt], tmp_path, "beside", env=env_without_ipcfs)
        assert rc == 0, out + err
        pid = assert_backgrounded_mount(mnt)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0] == str(sbin / "ipcfs").encode()
        rc, out, err = run(["umount", mnt], tmp_path, "umount")
        assert rc == 0, out + err
        assert_daemon_exits(mnt)


def test_helper_without_ipcfs_fails_with_one_line(tmp_path, env_without_ipcfs):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    helper = lonely / "mount.ipcfs"
    shutil.copyfile(HELPER_SRC, helper)
    os.chmod(helper, 0o755)
    with mounted_dir(tmp_path) as mnt:
        rc, out, err = run([helper, "ipcfs", mnt], tmp_path, "lonely", env=env_without_ipcfs)
        assert rc != 0
        assert "cannot find ipcfs" in err
        assert len(err.strip().splitlines()) == 1, err
        assert not is_mounted(mnt)


def test_helper_exit_status_is_ipcfs_exit_status(tmp_path, env_with_ipcfs):
    with mounted_dir(tmp_path) as mnt:
        direct_rc, _, direct_err = run([IPCFS_BIN, "-o", "max_bytes=lots", mnt], tmp_path,
                                       "direct")
        rc, out, err = run([HELPER_SRC, "ipcfs", mnt, "-o", "max_bytes=lots"], tmp_path,
                           "helper", env=env_with_ipcfs)
        assert direct_rc != 0
        assert rc == direct_rc, out + err
        assert "max_bytes" in err
        assert not is_mounted(mnt)
    missing = tmp_path / "does-not-exist"
    rc, out, err = run([HELPER_SRC, "ipcfs", missing], tmp_path, "missing", env=env_with_ipcfs)
    assert rc != 0
    assert err.strip(), "no error message for a missing mountpoint"


def test_helper_rejects_a_bad_command_line(tmp_path, env_with_ipcfs):
    rc, _, err = run([HELPER_SRC, "ipcfs"], tmp_path, "noargs", env=env_with_ipcfs)
    assert rc != 0 and "usage" in err
    with mounted_dir(tmp_path) as mnt:
        rc, _, err = run([HELPER_SRC, "ipcfs", mnt, "-N", "/proc/1/ns/mnt"], tmp_path, "ns",
                         env=env_with_ipcfs)
        assert rc != 0 and "namespace" in err
        assert not is_mounted(mnt)


# ---------------------------------------------------------------- mount(8) and fstab

def test_mount_t_ipcfs_with_options_and_umount(tmp_path, sbin_helper):
    with mounted_dir(tmp_path) as mnt:
        rc, out, err = run(["mount", "-t", "ipcfs", "ipcfs", mnt, "-o", "max_bytes=1G"],
                           tmp_path, "mount")
        assert rc == 0, out + err
        assert_backgrounded_mount(mnt, max_bytes=1 << 30)
        source, fstype, _ = mount_entry(mnt)
        assert (source, fstype) == ("ipcfs", "fuse.ipcfs")

        rc, out, err = run(["umount", mnt], tmp_path, "umount")
        assert rc == 0, out + err
        assert not is_mounted(mnt)
        assert_daemon_exits(mnt)


def test_mount_t_ipcfs_passes_a_bad_option_error_through(tmp_path, sbin_helper):
    with mounted_dir(tmp_path) as mnt:
        rc, out, err = run(["mount", "-t", "ipcfs", "ipcfs", mnt, "-o", "max_bytes=lots"],
                           tmp_path, "mount")
        assert rc != 0
        assert "max_bytes" in out + err
        assert not is_mounted(mnt)


def test_fstab_line_mounts_with_mount_T_and_umount_unmounts(tmp_path, sbin_helper):
    with mounted_dir(tmp_path) as mnt:
        fstab = tmp_path / "fstab"
        fstab.write_text("# test fstab\n"
                         f"ipcfs {mnt} ipcfs max_bytes=1G,noauto,nofail,x-systemd.requires=/ 0 0\n")
        rc, out, err = run(["mount", "-T", fstab, mnt], tmp_path, "mount")
        assert rc == 0, out + err
        assert_backgrounded_mount(mnt, max_bytes=1 << 30)

        # mount(8) sees it as mounted, and `findmnt --fstab` agrees with the line.
        rc, out, err = run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "--mountpoint", mnt],
                           tmp_path, "findmnt")
        assert rc == 0 and out.split() == ["ipcfs", "fuse.ipcfs"], out + err

        rc, out, err = run(["umount", mnt], tmp_path, "umount")
        assert rc == 0, out + err
        assert not is_mounted(mnt)
        assert_daemon_exits(mnt)


def test_fstab_fake_mount_does_not_mount(tmp_path, sbin_helper):
    with mounted_dir(tmp_path) as mnt:
        fstab = tmp_path / "fstab"
        fstab.write_text(f"ipcfs {mnt} ipcfs max_bytes=1G,noauto 0 0\n")
        rc, out, err = run(["mount", "-f", "-T", fstab, mnt], tmp_path, "fake")
        assert rc == 0, out + err
        assert not is_mounted(mnt)
        assert not daemon_pids(mnt)


# ---------------------------------------------------------------- systemd

def configured_unit(tmp_path, bin_dir):
    """The unit as `cmake --install` writes it, with ipcfs in bin_dir."""
    text = UNIT_SRC.read_text()
    assert set(re.findall(r"@[A-Za-z_]+@", text)) == {BINDIR_PLACEHOLDER}
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    unit = unit_dir / "ipcfs@.service"
    unit.write_text(text.replace(BINDIR_PLACEHOLDER, str(bin_dir)))
    return unit


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path, bin_dir):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = configured_unit(tmp_path, bin_dir)
    for target in (unit, f"{unit}:ipcfs@tmp-ipc.service"):
        rc, out, err = run(["systemd-analyze", "verify", "--man=no", target], tmp_path, "verify")
        assert rc == 0, out + err
        # Warnings ("Unknown key", "ignoring") do not fail verify: none are allowed either.
        assert not err.strip(), err


def _unit_commands(unit_text, key):
    return [line.split("=", 1)[1] for line in unit_text.splitlines() if line.startswith(key + "=")]


def _expand(command, mountpoint, instance, env):
    """A small model of how systemd turns an Exec line into argv: prefix characters,
    word splitting with quotes, specifiers, $VAR as words, ${VAR} inside words, $$ as $."""
    ignore_failure = command.startswith("-")
    words = shlex.split(command.lstrip("-@+!:"))
    argv = []
    for w in words:
        if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", w):
            argv.extend(env.get(w[1:], "").split())
            continue
        w = w.replace("%f", str(mountpoint)).replace("%i", instance).replace("$$", "\0")
        # Inside a word systemd expands ${NAME}; $NAME is expanded here too, to be strict:
        # a shell variable in a unit must be written $$i.
        w = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)",
                   lambda m: env.get(m.group(1) or m.group(2), ""), w)
        argv.append(w.replace("\0", "$"))
    return argv, ignore_failure


def test_systemd_unit_commands_mount_stop_and_clean_a_stale_mount(tmp_path, bin_dir):
    """Runs the unit's commands as systemd would (no systemd needed): start creates the
    directory, mounts in the foreground and is up only once the mount is ready; SIGTERM
    unmounts cleanly with exit 0; after a crash, ExecStopPost detaches the stale mount."""
    for tool in ("findmnt", "umount", "mkdir"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    text = configured_unit(tmp_path, bin_dir).read_text()
    mnt = tmp_path / "svc" / "ipc"   # ExecStartPre creates it
    instance = "unused"
    env = dict(os.environ, IPCFS_ARGS="-o max_bytes=3M --log-level warn")

    def run_all(key, tag):
        for i, command in enumerate(_unit_commands(text, key)):
            argv, ignore_failure = _expand(command, mnt, instance, env)
            rc, out, err = run(argv, tmp_path, f"{tag}{i}", env=env)
            assert ignore_failure or rc == 0, f"{key} {argv}: {rc} {out}{err}"

    (start_cmd,) = _unit_commands(text, "ExecStart")
    start_argv, _ = _expand(start_cmd, mnt, instance, env)
    assert start_argv[:2] == [str(bin_dir / "ipcfs"), "-f"]

    for round_ in ("stop", "crash"):
        log = open(tmp_path / f"{round_}.log", "wb")
        proc = None
        try:
            run_all("ExecStartPre", f"{round_}-pre")
            proc = subprocess.Popen(start_argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    env=env)
            run_all("ExecStartPost", f"{round_}-post")  # waits (with a deadline) for the mount
            assert is_mounted(mnt)
            assert read_status(mnt)["max_bytes"] == str(3 << 20)
            exercise(mnt, f"unit-{round_}")
            if round_ == "stop":
                proc.send_signal(signal.SIGTERM)   # what `systemctl stop` does (KillMode=mixed)
                assert proc.wait(timeout=EXIT_DEADLINE_S) == 0
                assert not is_mounted(mnt)
            else:
                proc.kill()
                proc.wait(timeout=EXIT_DEADLINE_S)
                assert is_mounted(mnt), "a killed daemon leaves its mount behind"
            run_all("ExecStopPost", f"{round_}-stoppost")
            assert not is_mounted(mnt)
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=EXIT_DEADLINE_S)
            cleanup_mount(mnt)
            log.close()


# ---------------------------------------------------------------- cmake --install

def _build_dir():
    """The build tree of $IPCFS_BIN (BUILD/fs/ipcfs), configured with the mount helper."""
    build = Path(os.path.realpath(IPCFS_BIN)).parents[1]
    if not (build / "CMakeCache.txt").exists():
        pytest.skip(f"{IPCFS_BIN} is not in a CMake build tree")
    rules = build / "mount-helpers" / "cmake_install.cmake"
    if not rules.exists() or "mount.ipcfs" not in rules.read_text():
        pytest.skip(f"{build} was configured before the mount helper existed; re-run cmake")
    return build


def _cache_value(build, name):
    for line in (build / "CMakeCache.txt").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split("=", 1)[1]
    return None


def test_cmake_install_puts_helper_in_sbin_binary_in_bindir_and_unit_in_lib_systemd(tmp_path):
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    build = _build_dir()
    prefix = tmp_path / "prefix"
    destdir = tmp_path / "destdir"
    env = dict(os.environ, DESTDIR=str(destdir))
    rc, out, err = run(["cmake", "--install", build, "--prefix", prefix], tmp_path, "install",
                       env=env, timeout=INSTALL_DEADLINE_S)
    assert rc == 0, out + err

    bindir = _cache_value(build, "CMAKE_INSTALL_BINDIR") or "bin"
    installed_bindir = Path(bindir) if os.path.isabs(bindir) else prefix / bindir
    staged = lambda p: destdir / str(p).lstrip("/")  # noqa: E731

    helper = destdir / "sbin" / "mount.ipcfs"   # absolute /sbin, under DESTDIR
    ipcfs = staged(installed_bindir / "ipcfs")
    unit = staged(prefix / "lib" / "systemd" / "system" / "ipcfs@.service")
    for path in (helper, ipcfs, unit):
        got = sorted(map(str, destdir.rglob("*")))
        assert path.is_file(), f"{path} was not installed; got {got}"
    assert os.access(helper, os.X_OK) and os.access(ipcfs, os.X_OK)
    assert not prefix.exists(), "DESTDIR was not honoured"

    # Both name the directory ipcfs was installed to (the --prefix given at install time).
    helper_text = helper.read_text()
    assert f"install_bindir='{installed_bindir}'" in helper_text
    assert _same_helper(helper)
    assert BINDIR_PLACEHOLDER not in unit.read_text()
    (start,) = _unit_commands(unit.read_text(), "ExecStart")
    assert start.split()[0] == str(installed_bindir / "ipcfs")
    rc, out, err = run(["sh", "-n", helper], tmp_path, "syntax")
    assert rc == 0, out + err
