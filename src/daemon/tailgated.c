/*
 * tailgated.c - the subscriber daemon: options, signals, the main loop.
 *
 *   tailgated [-c FILE] [--check [--syntax]] [--syslog] [--remove-on-exit] [-d]
 *   tailgated --cleanup [--yes] [-c FILE]
 *
 * One process per upstream database.  For each feed in the configuration
 * it holds one subscription (source.h) and writes one batch per upstream
 * timestamp into the feed's shared-memory ring (feed.h, ring.h); the loop
 * is daemon.c.  Signals arrive through a signalfd polled with the
 * upstream sockets, so no work ever runs in a handler:
 *
 *   SIGTERM, SIGINT  stop: every segment is marked closed (and removed
 *                    with --remove-on-exit), exit 0
 *   SIGHUP           reload the configuration: feeds added, removed or
 *                    changed; a file with errors is logged and ignored
 *
 * It stays in the foreground (systemd, runit, a container supervise it).
 */
#include "config.h" /* autoconf: _GNU_SOURCE, PACKAGE_VERSION; first */

#include "conf.h"

#include "check.h"
#include "cleanup.h"
#include "daemon.h"
#include "log.h"
#include "ring.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <fcntl.h>
#include <unistd.h>

#define DEFAULT_CONFIG "/etc/tailgate/tailgated.conf"

static void
usage(FILE *f)
{
	fprintf(f,
	        "usage: tailgated [-c FILE] [--check [--syntax]] [--syslog] [--remove-on-exit] "
	        "[-d]\n"
	        "       tailgated --cleanup [--yes] [-c FILE]\n"
	        "\n"
	        "Subscribe to each feed's SQL view and publish its changes, one batch per\n"
	        "upstream timestamp, into a shared-memory ring per feed.\n"
	        "\n"
	        "  -c, --config FILE   configuration file (default %s)\n"
	        "  -n, --check         check the configuration, then connect and verify every\n"
	        "                      feed and the ring_dir (like nginx -t); one line per\n"
	        "                      problem, exit 1 when there is one\n"
	        "      --syntax        with --check: the file only, no connection\n"
	        "      --cleanup       list the slots and publications tailgated created that\n"
	        "                      the configuration no longer names (never an active slot)\n"
	        "      --yes           with --cleanup: drop them\n"
	        "      --syslog        log to syslog (facility daemon) instead of stderr\n"
	        "      --remove-on-exit  unlink the feeds' segments when stopping\n"
	        "  -d, --debug         log debug messages too\n"
	        "  -q, --quiet         log warnings and errors only\n"
	        "  -h, --help          this help\n"
	        "  -V, --version       print the version\n"
	        "\n"
	        "SIGTERM/SIGINT stop, SIGHUP reloads the configuration.  See tailgated(8)\n"
	        "and tailgated.conf(5).\n",
	        DEFAULT_CONFIG);
}

static bool
ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/*
 * The feeds are for the responder's user alone, not every local user.
 * New files are created RING_FILE_MODE (0640).  At start the files of
 * ours an earlier version left world-readable (0644) are given that mode
 * too.  With ring_group, ring_dir becomes that group's, mode 2750: the
 * setgid bit gives every file created in it the group, so a responder
 * running as a member of it reads the feeds.  A shared directory (sticky,
 * like /dev/shm itself) is refused rather than changed.  Read at start
 * only: a reload does not change ring_group.
 */
static void
secure_ring_dir(const struct conf *conf)
{
	const char *dir = conf->ring_dir;
	struct dirent *e;
	struct stat st;
	DIR *d;
	int dfd;

	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fstat(dfd, &st) != 0)
		fatal("ring_dir %s", dir);
	if (conf->ring_group != NULL) {
		if (st.st_mode & S_ISVTX)
			fatalx("ring_group %s: ring_dir %s is a shared directory (sticky bit, like "
			       "/dev/shm): give tailgated a directory of its own (e.g. "
			       "/dev/shm/tailgate) to hand to the group",
			       conf->ring_group, dir);
		if (fchown(dfd, (uid_t)-1, (gid_t)conf->ring_gid) != 0 ||
		    fchmod(dfd, S_ISGID | 0750) != 0)
			fatal("ring_group %s: cannot give ring_dir %s to group %s (gid %u) mode "
			      "2750 "
			      "(the daemon's user must own it and, unless root, be a member of "
			      "the group)",
			      conf->ring_group, dir, conf->ring_group, conf->ring_gid);
	}
	d = fdopendir(dfd);
	if (d == NULL)
		fatal("ring_dir %s", dir);
	while ((e = readdir(d)) != NULL) {
		const char *n = e->d_name;
		struct stat fs;

		if (!ends_with(n, ".ring") && !ends_with(n, ".snap") &&
		    strcmp(n, "tailgated.lock") != 0 && strcmp(n, "tailgated.slots") != 0)
			continue;
		if (fstatat(dfd, n, &fs, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(fs.st_mode) ||
		    fs.st_uid != geteuid())
			continue;
		if (conf->ring_group != NULL && fs.st_gid != (gid_t)conf->ring_gid &&
		    fchownat(dfd, n, (uid_t)-1, (gid_t)conf->ring_gid, AT_SYMLINK_NOFOLLOW) != 0)
			log_warning("ring_group %s: cannot give %s/%s to the group: %s",
			            conf->ring_group, dir, n, strerror(errno));
		if ((fs.st_mode & 07777) != RING_FILE_MODE &&
		    fchmodat(dfd, n, RING_FILE_MODE, 0) != 0)
			log_warning("cannot make %s/%s mode %04o: %s", dir, n, RING_FILE_MODE,
			            strerror(errno));
	}
	closedir(d);
}

/*
 * One daemon per ring directory.  Two would both write the same segments:
 * the second replaces the rings and the first streams into files nobody
 * reads.  An exclusive flock on RING_DIR/tailgated.lock, held for the
 * process's life (the kernel drops it when the process dies, kill -9
 * included, so there is no stale lock to clean up), refuses the second
 * with the first one's pid.
 */
static void
lock_ring_dir(const char *ring_dir)
{
	char path[4096], pid[32] = "";
	int fd, n;

	if (snprintf(path, sizeof(path), "%s/tailgated.lock", ring_dir) >= (int)sizeof(path))
		fatalx("ring_dir %s: path too long", ring_dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, RING_FILE_MODE);
	if (fd < 0)
		fatal("ring_dir %s: cannot open %s (the directory must exist and be writable by "
		      "the daemon's user)",
		      ring_dir, path);
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if (errno != EWOULDBLOCK)
			fatal("ring_dir %s: cannot lock %s", ring_dir, path);
		n = (int)pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		fatalx("ring_dir %s is in use by another tailgated (pid %s); stop it, or give "
		       "this one its own ring_dir",
		       ring_dir, pid[0] ? pid : "unknown");
	}
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n)
		log_warning("ring_dir %s: cannot write the pid into %s: %s", ring_dir, path,
		            strerror(errno));
	/* fd stays open: the lock lives as long as the process. */
}

/* A configuration that holds a password should be readable by the daemon's
 * user (and its group) only: warn when every user of the host can read it.
 * A warning, not a refusal: the operator may have reasons (a container
 * with one user), and refusing would stop a running service on reload. */
static void
warn_readable_password(const struct conf *conf, const char *path, FILE *out)
{
	struct stat st;

	if (conf == NULL || conf->password == NULL || stat(path, &st) != 0 ||
	    (st.st_mode & S_IROTH) == 0)
		return;
	if (out != NULL)
		fprintf(out,
		        "tailgated: warning: %s holds a password and every user can read it "
		        "(mode %04o); chmod 640 %s\n",
		        path, (unsigned)(st.st_mode & 07777), path);
	else
		log_warning("%s holds a password and every user can read it (mode %04o); "
		            "chmod 640 %s",
		            path, (unsigned)(st.st_mode & 07777), path);
}

int
main(int argc, char **argv)
{
	enum { OPT_SYSLOG = 256, OPT_REMOVE, OPT_SYNTAX, OPT_CLEANUP, OPT_YES };
	static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
	                                     {"check", no_argument, NULL, 'n'},
	                                     {"syntax", no_argument, NULL, OPT_SYNTAX},
	                                     {"cleanup", no_argument, NULL, OPT_CLEANUP},
	                                     {"yes", no_argument, NULL, OPT_YES},
	                                     {"syslog", no_argument, NULL, OPT_SYSLOG},
	                                     {"remove-on-exit", no_argument, NULL, OPT_REMOVE},
	                                     {"debug", no_argument, NULL, 'd'},
	                                     {"quiet", no_argument, NULL, 'q'},
	                                     {"help", no_argument, NULL, 'h'},
	                                     {"version", no_argument, NULL, 'V'},
	                                     {NULL, 0, NULL, 0}};
	const char *path = DEFAULT_CONFIG;
	bool check = false, syntax_only = false, cleanup = false, yes = false, use_syslog = false,
	     remove_on_exit = false, stop = false;
	struct conf *conf;
	struct daemon *d;
	struct cleanup_watch *watch;
	char err[1024];
	sigset_t mask;
	int c, sfd;

	while ((c = getopt_long(argc, argv, "c:ndqhV", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case 'n':
			check = true;
			break;
		case OPT_SYNTAX:
			syntax_only = true;
			break;
		case OPT_CLEANUP:
			cleanup = true;
			break;
		case OPT_YES:
			yes = true;
			break;
		case OPT_SYSLOG:
			use_syslog = true;
			break;
		case OPT_REMOVE:
			remove_on_exit = true;
			break;
		case 'd':
			log_max_level = LOG_LEVEL_DEBUG;
			break;
		case 'q':
			log_max_level = LOG_LEVEL_WARNING;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("tailgated %s\n", PACKAGE_VERSION);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	if (yes && !cleanup) {
		fprintf(stderr, "tailgated: --yes goes with --cleanup\n");
		return 2;
	}
	conf = conf_load(path, err, sizeof(err));
	if (cleanup) {
		if (conf == NULL) {
			fprintf(stderr, "tailgated: %s\n", err);
			return 1;
		}
		warn_readable_password(conf, path, stderr);
		int rc = cleanup_run(conf, yes, stdout);
		conf_free(conf);
		return rc;
	}
	if (check) {
		if (conf == NULL) {
			fprintf(stderr, "tailgated: %s\n", err);
			return 1;
		}
		warn_readable_password(conf, path, stderr);
		int problems = syntax_only ? 0 : check_run(conf, stderr);
		if (problems == 0)
			printf("%s: ok (source %s, %zu feed%s%s)\n", path, conf->source,
			       conf->nfeeds, conf->nfeeds == 1 ? "" : "s",
			       syntax_only ? "; syntax only" : "; upstream and ring_dir checked");
		else
			fprintf(stderr, "%s: %d problem%s\n", path, problems,
			        problems == 1 ? "" : "s");
		conf_free(conf);
		return problems == 0 ? 0 : 1;
	}
	log_init("tailgated", use_syslog);
	if (conf == NULL)
		fatalx("%s", err);
	log_redact(conf->password); /* libpq's messages must never show it */
	warn_readable_password(conf, path, NULL);
	lock_ring_dir(conf->ring_dir);
	secure_ring_dir(conf);

	/* Signals come through the poll loop. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0)
		fatal("sigprocmask");
	sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0)
		fatal("signalfd");
	signal(SIGPIPE, SIG_IGN);
	/* After the mask: the watch's thread inherits it, so signals come
	 * to the loop's signalfd only. */
	watch = cleanup_watch_start(conf);

	d = daemon_new(conf, remove_on_exit);
	if (d == NULL)
		fatalx("%s: cannot start the feeds (see above)", path);
	log_info("started: %s, %zu feed%s, %s", path, conf->nfeeds, conf->nfeeds == 1 ? "" : "s",
	         conf->source);

	while (!stop) {
		struct signalfd_siginfo si;

		if (!daemon_step(d, sfd, -1))
			continue;
		while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
			if (si.ssi_signo == SIGHUP) {
				struct conf *next = conf_load(path, err, sizeof(err));
				if (next == NULL) {
					log_error("reload refused, keeping the running "
					          "configuration: %s",
					          err);
					continue;
				}
				log_info("reloading %s", path);
				log_redact(next->password);
				warn_readable_password(next, path, NULL);
				cleanup_watch_reload(watch, next);
				daemon_reload(d, next);
			} else {
				log_info("stopping on signal %s", strsignal((int)si.ssi_signo));
				stop = true;
			}
		}
	}
	cleanup_watch_stop(watch);
	daemon_free(d);
	close(sfd);
	log_info("stopped");
	return 0;
}
