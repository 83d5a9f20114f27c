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
 * with one line (handcar.runtime.lifecycle.require_sealed_exe). Every other command (state,
 * start, kill, ...) runs in no container's sight and execs the interpreter directly.
 *
 * Every call pays for this program's exec, so on x86_64 it is built without libc: the static
 * glibc start-up alone costs about 1 ms on a virtual machine (CPUID traps), this one about
 * 0.05 ms. Elsewhere (HC_LIBC) the same code runs on libc's syscall().
 *
 * `make install` builds one binary per tool, with a generated header that defines:
 *   HC_PYTHON       the venv's interpreter: argv[0], so Python finds the venv as it did
 *   HC_REAL_PYTHON  the file that it resolves to, which is what is exec'd
 *   HC_SITE         the site-packages directory (-S skips site, for speed)
 *   HC_MODULE       the module whose main() runs
 *   HC_LAYER        an empty directory: without an upper layer, overlayfs needs two lower ones
 *   HC_CRASHCART    defined for crashcart, whose command line differs
 *   HC_ALWAYS       defined for handcar-python: always the read-only image
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/syscall.h>

#define FSOPEN_CLOEXEC 0x1
#define FSCONFIG_SET_STRING 1
#define FSCONFIG_CMD_CREATE 6
#define FSMOUNT_CLOEXEC 0x1
#define MOUNT_ATTR_RDONLY 0x1
#define MOUNT_ATTR_NOSUID 0x2
#define MOUNT_ATTR_NODEV 0x4
#define MFD_CLOEXEC_ 0x1
#define MFD_ALLOW_SEALING_ 0x2
#define MFD_EXEC_ 0x10 /* Linux 6.3: executable whatever vm.memfd_noexec says */
#define SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)
#define EINVAL_ 22

#if defined(__x86_64__) && !defined(HC_LIBC)
/* A raw system call: the result, or -errno. */
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long result;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return result;
}
#else
#include <errno.h>
#include <unistd.h>
static long sys6(long n, long a, long b, long c, long d, long e, long f) {
    long result = syscall(n, a, b, c, d, e, f);
    return result < 0 ? -errno : result;
}
#endif
#define sys(n, a, b, c) sys6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)

static const char ENTRY[] =
    "import sys;sys.path.insert(0,sys.argv.pop(1));from " HC_MODULE " import main;main()";

static int same(const char *a, const char *b) {
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static int listed(const char *const *list, const char *word) {
    for (; *list; list++)
        if (same(*list, word))
            return 1;
    return 0;
}

#if defined(HC_ALWAYS)
/* handcar-python: a library program may fork into a container's sight at any moment. */
static int seen_by_containers(int argc, char **argv) {
    (void)argc, (void)argv, (void)listed;
    return 1;
}
#elif defined(HC_CRASHCART)
/* Every crashcart command but `build` and the help enters a container. */
static int seen_by_containers(int argc, char **argv) {
    static const char *const outside[] = {"build", "help", "-h", "--help", 0};
    return argc > 1 && !listed(outside, argv[1]);
}
#else
static int has(const char *s, char c) {
    for (; *s; s++)
        if (*s == c)
            return 1;
    return 0;
}

/* Whether the command forks processes that a container can see. runc's global flags come
 * first, parsed as handcar.cli.main.parse parses them: any number of dashes, the value after
 * '=' or in the next word. A command that is not known to stay outside counts as one that
 * does not: the slow path is the safe one. */
static int seen_by_containers(int argc, char **argv) {
    static const char *const value_flags[] = {"log",      "log-format",     "root", "criu",
                                              "rootless", "cgroup-manager", 0};
    static const char *const outside[] = {"start",  "state",  "kill",  "delete", "list",
                                          "spec",   "features", "ps",  "events", "update",
                                          "pause",  "resume", "checkpoint", 0};
    int i = 1;
    while (i < argc && argv[i][0] == '-' && argv[i][1] != '\0') {
        const char *name = argv[i];
        while (*name == '-')
            name++;
        i += (!has(name, '=') && listed(value_flags, name)) ? 2 : 1;
    }
    return i < argc && !listed(outside, argv[i]);
}
#endif

/* "DIR:LAYER" for overlayfs, where DIR holds the interpreter, with ':' and '\' escaped; sets
 * *name to the interpreter's file name. -1 when it does not fit. */
static int lowerdirs(char *out, int size, const char **name) {
    const char *parts[] = {HC_REAL_PYTHON, HC_LAYER};
    const char *slash = HC_REAL_PYTHON;
    int n = 0;
    for (const char *c = HC_REAL_PYTHON; *c; c++)
        if (*c == '/')
            slash = c;
    *name = slash + 1;
    for (int part = 0; part < 2; part++) {
        if (part == 1)
            out[n++] = ':';
        for (const char *c = parts[part]; *c && (part == 1 || c < slash); c++) {
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

/* The interpreter on a read-only overlayfs mount that no mount table shows; <0 if refused. */
static long overlay_image(void) {
    char layers[8192];
    const char *name;
    long exe = -1, mnt = -1;
    if (lowerdirs(layers, sizeof layers, &name) < 0)
        return -1;
    long ctx = sys(SYS_fsopen, "overlay", FSOPEN_CLOEXEC, 0);
    if (ctx < 0)
        return -1;
    if (sys6(SYS_fsconfig, ctx, FSCONFIG_SET_STRING, (long)"lowerdir", (long)layers, 0, 0) == 0) {
        /* xino is of no use here, and warns in dmesg when the layers' filesystems differ */
        sys6(SYS_fsconfig, ctx, FSCONFIG_SET_STRING, (long)"xino", (long)"off", 0, 0);
        if (sys6(SYS_fsconfig, ctx, FSCONFIG_CMD_CREATE, 0, 0, 0, 0) == 0)
            mnt = sys(SYS_fsmount, ctx, FSMOUNT_CLOEXEC,
                      MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    }
    sys(SYS_close, ctx, 0, 0);
    if (mnt >= 0) {
        exe = sys6(SYS_openat, mnt, (long)name, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0, 0, 0);
        sys(SYS_close, mnt, 0, 0); /* the file keeps the mount alive; it goes with the last user */
    }
    return exe;
}

/* A sealed memfd copy of the interpreter: no write, grow, shrink or new seal, ever. */
static long memfd_image(void) {
    long src = sys6(SYS_openat, AT_FDCWD, (long)HC_REAL_PYTHON, O_RDONLY | O_CLOEXEC, 0, 0, 0);
    if (src < 0)
        return -1;
    long fd = sys(SYS_memfd_create, "python", MFD_CLOEXEC_ | MFD_ALLOW_SEALING_ | MFD_EXEC_, 0);
    if (fd == -EINVAL_) /* before Linux 6.3 */
        fd = sys(SYS_memfd_create, "python", MFD_CLOEXEC_ | MFD_ALLOW_SEALING_, 0);
    long sent = fd < 0 ? -1 : 1;
    while (sent > 0)
        sent = sys6(SYS_sendfile, fd, src, 0, 1L << 30, 0, 0);
    sys(SYS_close, src, 0, 0);
    if (sent == 0 && sys(SYS_fcntl, fd, F_ADD_SEALS, SEALS) == 0)
        return fd;
    if (fd >= 0)
        sys(SYS_close, fd, 0, 0);
    return -1;
}

static void say(const char *text) {
    int n = 0;
    while (text[n])
        n++;
    sys(SYS_write, 2, text, n);
}

static int launch(int argc, char **argv, char **envp) {
    char *args[argc + 5];
    args[0] = (char *)HC_PYTHON;
    args[1] = (char *)"-IS";
    args[2] = (char *)"-c";
    args[3] = (char *)ENTRY;
    args[4] = (char *)HC_SITE;
    for (int i = 1; i <= argc; i++) /* with argv's final NULL */
        args[i + 4] = argv[i];
    if (seen_by_containers(argc, argv)) {
        long image = overlay_image();
        if (image < 0)
            image = memfd_image();
        if (image >= 0)
            sys6(SYS_execveat, image, (long)"", (long)args, (long)envp, AT_EMPTY_PATH, 0);
    }
    long err = -sys(SYS_execve, HC_REAL_PYTHON, args, envp);
    char code[8], *digit = code + sizeof code - 1;
    *digit = '\0';
    do
        *--digit = (char)('0' + err % 10);
    while ((err /= 10) > 0 && digit > code);
    say(argv[0]);
    say(": cannot run " HC_REAL_PYTHON ": errno ");
    say(digit);
    say("\n");
    return 127;
}

#if defined(__x86_64__) && !defined(HC_LIBC)
/* The entry point: the stack holds argc, argv[], NULL, envp[], NULL. */
__attribute__((used, noinline, noreturn)) void hc_start(long *stack);
void hc_start(long *stack) {
    int argc = (int)stack[0];
    char **argv = (char **)(stack + 1);
    sys(SYS_exit_group, launch(argc, argv, argv + argc + 1), 0, 0);
    __builtin_unreachable();
}
__asm__(".text\n.global _start\n_start:\n\txor %ebp, %ebp\n\tmov %rsp, %rdi\n"
        "\tand $-16, %rsp\n\tcall hc_start\n\thlt\n");
#else
int main(int argc, char **argv, char **envp) { return launch(argc, argv, envp); }
#endif
