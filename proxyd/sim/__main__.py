"""``python -m proxyd.sim --listen tcp:2776:interface=127.0.0.1 ...`` without twistd.

Logs to stdout; prints ``proxyd-smsc listening on <host>:<port>`` once the listener is up
(use ``--listen tcp:0:interface=127.0.0.1`` to let the system pick the port). Stops cleanly
on SIGINT/SIGTERM (record and stats files flushed and closed).
"""
from __future__ import annotations

import sys

from twisted.internet import endpoints
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python import usage

from proxyd.sim.service import ControlFactory, Options, make_factory


def main(argv: list[str] | None = None) -> int:
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        print("%s\n%s" % (options, e), file=sys.stderr)
        return 2
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)],
                                     redirectStandardIO=False)
    smsc = make_factory(options, reactor)
    status = [0]

    def listening(port, what):
        h = port.getHost()
        print("proxyd-smsc %s listening on %s:%s" % (what, h.host, h.port), flush=True)

    def failed(f, what):
        print("proxyd-smsc: cannot listen (%s): %s" % (what, f.getErrorMessage()),
              file=sys.stderr, flush=True)
        status[0] = 1
        if reactor.running:
            reactor.stop()

    ep = endpoints.serverFromString(reactor, options["listen"])
    what = options["protocol"]
    ep.listen(smsc).addCallbacks(listening, failed, callbackArgs=(what,),
                                 errbackArgs=(what,))
    if options["control"]:
        cep = endpoints.serverFromString(reactor, options["control"])
        cep.listen(ControlFactory(smsc)).addCallbacks(
            listening, failed, callbackArgs=("control",), errbackArgs=("control",))
    reactor.addSystemEventTrigger("after", "shutdown", smsc.close)
    if status[0]:
        return status[0]
    reactor.run()
    return status[0]


if __name__ == "__main__":
    sys.exit(main())
