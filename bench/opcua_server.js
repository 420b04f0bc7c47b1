// An OPC UA server not written with asyncua, for bench/opcua_ingest.py --server node-opcua.
//
//   node bench/opcua_server.js PORT MACHINES RATE PKI_DIR
//
// node-opcua (installed by the bench into bench/.node-opcua). The same address space as the
// asyncua bench server: ns=urn:bench:cnc, objects Machines/M0000... with the variables
// M0000.Execution (String), M0000.SpindleSpeed (Double), M0000.Alarm (Boolean). It prints
// "ready" once listening, then toggles the Execution of random machines (ACTIVE <-> READY, with
// a source timestamp) at RATE changes per second in total, and prints {"written": n} every
// second. Security mode None is offered (as by default), anonymous access allowed.
"use strict";
const path = require("path");
const { OPCUAServer } = require("node-opcua-server");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { DataType } = require("node-opcua-variant");
const { StatusCodes } = require("node-opcua-status-code");

const [port, machines, rate, pkiDir] = process.argv.slice(2);
const URI = "urn:bench:cnc";

// A small seeded generator (xorshift32): the same sequence of machines on every run.
let seed = 1;
function random() {
    seed ^= seed << 13; seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5; seed >>>= 0;
    return seed / 4294967296;
}

async function main() {
    const certificateManager = new OPCUACertificateManager({ rootFolder: path.join(pkiDir, "pki"),
        automaticallyAcceptUnknownCertificate: true });
    const server = new OPCUAServer({
        port: Number(port), hostname: "127.0.0.1", allowAnonymous: true,
        serverCertificateManager: certificateManager,
        // Enough for one collector holding 3 monitored items per machine on one session.
        serverCapabilities: { maxSessions: 10, maxMonitoredItems: 1000000, maxMonitoredItemsPerSubscription: 1000000 },
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const ns = addressSpace.registerNamespace(URI);
    const folder = ns.addFolder(addressSpace.rootFolder.objects, { nodeId: "s=Machines", browseName: "Machines" });
    const execution = [];
    const running = [];
    for (let i = 0; i < Number(machines); i++) {
        const name = "M" + String(i).padStart(4, "0");
        const obj = ns.addObject({ organizedBy: folder, nodeId: `s=${name}`, browseName: name });
        execution.push(ns.addVariable({ componentOf: obj, nodeId: `s=${name}.Execution`, browseName: "Execution",
            dataType: "String", value: { dataType: DataType.String, value: "READY" } }));
        ns.addVariable({ componentOf: obj, nodeId: `s=${name}.SpindleSpeed`, browseName: "SpindleSpeed",
            dataType: "Double", value: { dataType: DataType.Double, value: 0.0 } });
        ns.addVariable({ componentOf: obj, nodeId: `s=${name}.Alarm`, browseName: "Alarm",
            dataType: "Boolean", value: { dataType: DataType.Boolean, value: false } });
        running.push(false);
    }
    await server.start();
    console.log("ready");
    const start = Date.now();
    let written = 0;
    let lastReport = start;
    setInterval(() => {
        const now = Date.now();
        const due = Math.min(Math.floor((now - start) / 1000 * Number(rate)) - written, 2000);
        const stamp = new Date(now);
        for (let k = 0; k < due; k++) {
            const i = Math.floor(random() * execution.length);
            running[i] = !running[i];
            execution[i].setValueFromSource({ dataType: DataType.String, value: running[i] ? "ACTIVE" : "READY" },
                StatusCodes.Good, stamp);
            written++;
        }
        if (now - lastReport >= 1000) {
            lastReport = now;
            console.log(JSON.stringify({ written }));
        }
    }, 5);
    const stop = async () => { await server.shutdown(0); process.exit(0); };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
