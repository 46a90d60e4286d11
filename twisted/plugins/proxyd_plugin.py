"""twistd plugins: `twistd proxyd` (the daemon) and `twistd proxyd-smsc` (the simulator)."""
from twisted.application.service import ServiceMaker

proxyd = ServiceMaker("proxyd", "proxyd.service", "SMPP and HTTP front door for enterprise SMS",
                      "proxyd")
proxyd_smsc = ServiceMaker("proxyd-smsc", "proxyd.sim.service",
                           "SMSC simulator for demos, tests and benchmarks", "proxyd-smsc")
