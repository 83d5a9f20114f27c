/* The handcar and crashcart launchers: run the installed package on the venv's interpreter.
 *
 * They replace `#!python -IS` scripts for one reason. The processes that handcar forks into a
 * container's sight (the init from create until `start`, exec's process until its final exec,
 * crashcart's session keeper) are Python, and their /proc/<pid>/exe is the image this process
 * was exec'd from. Were that the host's interpreter file, a container process with
 * CAP_SYS_PTRACE could open it there and, once no Python runs, reopen it for writing and
 * replace the host's interpreter (CVE-2019-5736). So for the commands that fork such processes
 * the interpreter is exec'd from an image that nobody can write, as runc does:
 *   1. its file on a detached overlayfs mount of its directory: read-only, attached nowhere,
 *      no copy (the page cache stays shared with the real file), as runc >= 1.2 does;
 *   2. where this process may not mount (rootless), a sealed memfd copy, as runc 1.1 does.
 * When neither works the interpreter is exec'd as it is, and handcar refuses those commands
 * with one line (handcar.procfs.exe_is_sealed). Every other command (state, start, kill, ...)
 * runs in no container's sight and execs the interpreter directly: the hot paths pay for one
 * tiny static exec, nothing more.
 *
 * `make install` builds one binary per tool, with a generated header that defines:
 *   HC_PYTHON       the venv's interpreter: argv[0], so Python finds the venv as it did
 *   HC_REAL_PYTHON  the file that it resolves to, which is what is exec'd
 *   HC_SITE         the site-packages directory (-S skips site, for speed)
 *   HC_MODULE       the module whose main() runs
 *   HC_LAYER        an empty directory: without an upper layer, overlayfs needs two lower ones
 *   HC_CRASHCART    defined for crashcart, whose command line differs
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FSOPEN_CLOEXEC 0x1
#define FSCONFIG_SET_STRING 1
#define FSCONFIG_CMD_CREATE 6
#define FSMOUNT_CLOEXEC 0x1
#define MOUNT_ATTR_RDONLY 0x1
#define MOUNT_ATTR_NOSUID 0x2
#define MOUNT_ATTR_NODEV 0x4
#define MFD_CLOEXEC_ 0x1
#define MFD_ALLOW_SEALING_ 0x2
#define MFD_EXEC_ 0x10 /* Linux 6.3: executable even where vm.memfd_noexec says otherwise */
#define SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

extern char **environ;

static const char ENTRY[] =
    "import sys;sys.path.insert(0,sys.argv.pop(1));from " HC_MODULE " import main;main()";

static int listed(const char *const *list, const char *word) {
    for (; *list; list++)
        if (strcmp(*list, word) == 0)
            return 1;
    return 0;
}

#ifdef HC_CRASHCART
/* Every crashcart command but `build` and the help enters a container. */
static int seen_by_containers(int argc, char **argv) {
    static const char *const outside[] = {"build", "help", "-h", "--help", 0};
    return argc > 1 && !listed(outside, argv[1]);
}
#else
/* Whether the command forks processes that a container can see. runc's global flags come
 * first, parsed as handcar.cli.main.parse parses them: any number of dashes, the value after
 * '=' or in the next word. A command that is not known to stay outside counts as one that
 * does not: the slow path is the safe one. */
static int seen_by_containers(int argc, char **argv) {
    static const char *const value_flags[] = {"log",      "log-format",     "root", "criu",
                                              "rootless", "cgroup-manager", 0};
    static const char *const outside[] = {"start", "state",  "kill",   "delete",    "list",
                                          "spec",  "features", "ps",   "events",    "update",
                                          "pause", "resume", "checkpoint", 0};
    int i = 1;
    while (i < argc && argv[i][0] == '-' && argv[i][1] != '\0') {
        const char *name = argv[i];
        while (*name == '-')
            name++;
        i += (strchr(name, '=') == NULL && listed(value_flags, name)) ? 2 : 1;
    }
    return i < argc && !listed(outside, argv[i]);
}
#endif

/* "DIR:LAYER" for overlayfs, where DIR holds the interpreter; ':' and '\' escaped. */
static int lowerdirs(char *out, size_t size, const char **name) {
    const char *slash = strrchr(HC_REAL_PYTHON, '/');
    const char *parts[] = {HC_REAL_PYTHON, HC_LAYER};
    const char *ends[] = {slash, HC_LAYER + strlen(HC_LAYER)};
    size_t n = 0;
    *name = slash + 1;
    for (int part = 0; part < 2; part++) {
        if (part == 1)
            out[n++] = ':';
        for (const char *c = parts[part]; c < ends[part]; c++) {
            if (n + 3 >= size)
                return -1;
            if (*c == ':' || *c == '\\')
                out[n++] = '\\';
            out[n++] = *c;
        }
    }
    out[n] = '\0';
    return 0;
}

/* The interpreter on a read-only overlayfs mount that no mount table shows; -1 if refused. */
static int overlay_image(void) {
    char layers[8192];
    const char *name;
    int exe = -1, mnt = -1;
    if (lowerdirs(layers, sizeof layers, &name) < 0)
        return -1;
    int ctx = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
    if (ctx < 0)
        return -1;
    if (syscall(SYS_fsconfig, ctx, FSCONFIG_SET_STRING, "lowerdir", layers, 0) == 0) {
        /* xino is of no use here and warns in dmesg when the layers' filesystems differ */
        syscall(SYS_fsconfig, ctx, FSCONFIG_SET_STRING, "xino", "off", 0);
        if (syscall(SYS_fsconfig, ctx, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0)
            mnt = (int)syscall(SYS_fsmount, ctx, FSMOUNT_CLOEXEC,
                               MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    }
    close(ctx);
    if (mnt >= 0) {
        exe = openat(mnt, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        close(mnt); /* the file keeps the mount alive, and it goes with the last process */
    }
    return exe;
}

/* A sealed memfd copy of the interpreter: no write, grow, shrink or new seal, ever. */
static int memfd_image(void) {
    struct stat st;
    int src = open(HC_REAL_PYTHON, O_RDONLY | O_CLOEXEC);
    if (src < 0)
        return -1;
    int fd = (int)syscall(SYS_memfd_create, "python", MFD_CLOEXEC_ | MFD_ALLOW_SEALING_ | MFD_EXEC_);
    if (fd < 0 && errno == EINVAL) /* before Linux 6.3 */
        fd = (int)syscall(SYS_memfd_create, "python", MFD_CLOEXEC_ | MFD_ALLOW_SEALING_);
    if (fd >= 0 && fstat(src, &st) == 0) {
        off_t left = st.st_size;
        while (left > 0) {
            ssize_t sent = sendfile(fd, src, NULL, (size_t)left);
            if (sent <= 0)
                break;
            left -= sent;
        }
        if (left == 0 && fcntl(fd, F_ADD_SEALS, SEALS) == 0) {
            close(src);
            return fd;
        }
    }
    if (fd >= 0)
        close(fd);
    close(src);
    return -1;
}

int main(int argc, char **argv) {
    char *args[argc + 5];
    args[0] = HC_PYTHON;
    args[1] = "-IS";
    args[2] = (char *)"-c";
    args[3] = (char *)ENTRY;
    args[4] = HC_SITE;
    memcpy(args + 5, argv + 1, (size_t)argc * sizeof *argv); /* with argv's final NULL */
    if (seen_by_containers(argc, argv)) {
        int image = overlay_image();
        if (image < 0)
            image = memfd_image();
        if (image >= 0)
            syscall(SYS_execveat, image, "", args, environ, AT_EMPTY_PATH);
    }
    execve(HC_REAL_PYTHON, args, environ);
    fprintf(stderr, "%s: cannot run %s: %s\n", argv[0], HC_REAL_PYTHON, strerror(errno));
    return 127;
}
