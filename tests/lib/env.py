"""env.py - the setup the PostgreSQL integration tests share: a temporary
directory, a ring directory in it, a private PostgreSQL cluster and an
nginx + tailgate-fcgi stack on that ring directory.

    import sys; sys.path.insert(0, "tests/lib")
    from env import test_env

    with test_env("catchup") as env:        # cluster and stack started
        env.pg.psql("CREATE TABLE t (a int)")
        d = env.stop_later(Daemon(env.pg, env.ring_dir, {...}))
        d.start()
        status, obj = env.st.get_json("/feeds/t")
    return done()

    test_env(name, start_stack=False)   the stack is made, not started:
                                        the test calls env.st.start() itself
    test_env(name, stack_args={...})    more Stack() arguments
                                        (e.g. responder_args=[...])

    env.tmp        the directory (mkdtemp, "tailgate-NAME."), mode 0755:
                   nginx's workers (nobody, as root) reach the socket below it
    env.ring_dir   env.tmp/ring
    env.pg         a started PgCluster (its own directory, removed at the end)
    env.st         a Stack with its directory at env.tmp/stack
    env.stop_later(obj)  obj.stop() at the end, before the stack (the latest
                   first); returns obj.  env.at_end(fn) likewise for fn().
    env.stop()     stop it all now (idempotent): what stop_later and at_end
                   were given, then the stack, then the cluster; the
                   directory stays until the block ends.

Leaving the block (normally, or with an exception) stops everything in that
order, then removes env.tmp, unless a check failed (tap.failed()) or an
exception left the block: then it stays, with the stack's and the
daemon's logs, and its path is printed as a TAP comment.
"""

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager

import tap
from pg import PgCluster
from stack import Stack

__all__ = ["TestEnv", "test_env"]


class TestEnv:
    """What test_env() yields; see the module docstring."""

    def __init__(self, name, stack_args=None):
        self.tmp = tempfile.mkdtemp(prefix="tailgate-%s." % name)
        os.chmod(self.tmp, 0o755)  # nginx's workers reach the socket below it
        self.ring_dir = os.path.join(self.tmp, "ring")
        os.mkdir(self.ring_dir)
        self.pg = None
        self.st = None
        self._at_end = []
        self._stopped = False
        self._stack_args = dict(stack_args or {})

    def start(self, start_stack=True):
        self.pg = PgCluster()
        self.pg.start()
        self.st = Stack(ring_dir=self.ring_dir, base_dir=os.path.join(self.tmp, "stack"),
                        **self._stack_args)
        if start_stack:
            self.st.start()
        return self

    def at_end(self, fn):
        """Call fn() when the environment stops, before the stack stops."""
        self._at_end.append(fn)
        return fn

    def stop_later(self, obj):
        """obj.stop() when the environment stops; returns obj."""
        self.at_end(obj.stop)
        return obj

    def stop(self):
        """Stop what at_end/stop_later were given (the latest first), the
        stack, the cluster; once.  Each runs even when one before it
        raised; the first error is raised at the end."""
        if self._stopped:
            return
        self._stopped = True
        steps = list(reversed(self._at_end))
        if self.st is not None:
            steps.append(self.st.stop)
        if self.pg is not None:
            steps += [self.pg.stop, self.pg.cleanup]
        error = None
        for step in steps:
            try:
                step()
            except Exception as e:  # the rest must still stop
                error = error or e
        if error is not None:
            raise error

    def finish(self, failed):
        """Remove the directory, or keep it (and say where) after a failure."""
        if failed:
            print("# kept %s (logs of the failed run)" % self.tmp, flush=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


@contextmanager
def test_env(name, start_stack=True, stack_args=None):
    """A TestEnv, started; stopped and removed (or kept) when the block
    ends.  See the module docstring."""
    env = TestEnv(name, stack_args)
    clean = False
    try:
        env.start(start_stack)
        yield env
        env.stop()
        clean = True
    finally:
        try:
            env.stop()
        finally:
            env.finish(not clean or tap.failed() > 0)


if __name__ == "__main__":
    sys.exit("env.py is a module for the tests (see its docstring)")
