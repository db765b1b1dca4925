// An OPC-UA server on node-opcua for the opcua mapper's tests. argv: port, pki dir.
// Variables in namespace 1 (string ids): Temperature (Double, read-only, 20 + 0.5 for every 100 ms since the start),
// Counter (Int32, read-only, up by one with every Read request for it), Setpoint (Double, writable), Count (Int32, writable), Running (Boolean, writable),
// Label (String, writable). Security: None, and Basic256Sha256 with Sign or SignAndEncrypt; users:
// anonymous, or operator/secret. Client certificates are accepted on first sight.
// It prints "LISTENING <port>" once it serves. On stdin, the line "reads" prints "READS <n>", the
// number of Read service requests it has answered, and "value <name>" prints "VALUE <name> <value>".
const opcua = require("node-opcua");
const readline = require("readline");

async function main() {
  const port = parseInt(process.argv[2] || "0", 10) || 4840;
  const pkiDir = process.argv[3] || "./pki";
  const serverCertificateManager = new opcua.OPCUACertificateManager({
    automaticallyAcceptUnknownCertificate: true,
    rootFolder: pkiDir,
  });
  await serverCertificateManager.initialize();
  const server = new opcua.OPCUAServer({
    port,
    serverCertificateManager,
    securityPolicies: [opcua.SecurityPolicy.None, opcua.SecurityPolicy.Basic256Sha256],
    securityModes: [opcua.MessageSecurityMode.None, opcua.MessageSecurityMode.Sign, opcua.MessageSecurityMode.SignAndEncrypt],
    allowAnonymous: true,
    userManager: { isValidUser: (u, p) => u === "operator" && p === "secret" },
    buildInfo: { productName: "kedge-test-opcua", buildNumber: "1" },
  });
  await server.initialize();
  const ns = server.engine.addressSpace.getOwnNamespace();
  const folder = ns.addFolder(server.engine.addressSpace.rootFolder.objects, { browseName: "Plant" });
  const values = { Counter: 0, Setpoint: 21.5, Count: 7, Running: true, Label: "boiler-1" };
  const types = { Temperature: opcua.DataType.Double, Counter: opcua.DataType.Int32, Setpoint: opcua.DataType.Double, Count: opcua.DataType.Int32,
    Running: opcua.DataType.Boolean, Label: opcua.DataType.String };
  for (const name of ["Temperature", "Counter", "Setpoint", "Count", "Running", "Label"]) {
    const writable = name !== "Temperature" && name !== "Counter";
    ns.addVariable({
      componentOf: folder,
      browseName: name,
      nodeId: "s=" + name,
      dataType: opcua.DataType[types[name]],
      minimumSamplingInterval: 50,
      accessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
      userAccessLevel: writable ? "CurrentRead | CurrentWrite" : "CurrentRead",
      value: {
        get: () => new opcua.Variant({ dataType: types[name], value: values[name] }),
        set: (v) => { values[name] = v.value; return opcua.StatusCodes.Good; },
      },
    });
  }
  // Temperature moves by the clock, not by a timer: 20 + 0.5 for every 100 ms since the start.
  const t0 = Date.now();
  Object.defineProperty(values, "Temperature", { get: () => 20 + 0.5 * Math.floor((Date.now() - t0) / 100), enumerable: true });
  let reads = 0;
  server.on("request", (request) => {
    if (request.constructor.name !== "ReadRequest") return;
    reads++;
    // Counter goes up by one with every Read request that asks for it, before it is answered.
    if ((request.nodesToRead || []).some((n) => n.nodeId.toString() === "ns=1;s=Counter")) values.Counter++;
  });
  await server.start();
  console.log("LISTENING " + server.endpoints[0].port);
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === "reads") console.log("READS " + reads);
    if (cmd === "value") console.log("VALUE " + arg + " " + values[arg]);
  });
  rl.on("close", () => process.exit(0));
}
main().catch((e) => { console.error(e); process.exit(1); });
