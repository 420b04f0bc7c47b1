// A fleet of OPC UA servers, one machine tool each, for bench/opcua_fleet.py.
//
//   node bench/opcua_fleet_servers.js FIRST_PORT COUNT FIRST_MACHINE PERIOD_S SEED PKI_DIR
//
// node-opcua (installed by the bench into bench/.node-opcua): COUNT servers in this process on
// consecutive free ports from FIRST_PORT (a port in use is skipped), each with ONE machine in
// the OPC 40001 (OPC UA for Machinery) shape discovery looks for:
//
//   Objects/Machines (i=1001 in http://opcfoundation.org/UA/Machinery/)
//     M0007 (the machine, browse name = its id)
//       MachineryBuildingBlocks (DI namespace)
//         MachineryItemState (type Machinery i=1002, MachineryItemState_StateMachineType)
//           CurrentState (LocalizedText) / Id (NodeId: Machinery i=5006 Executing, 5007 NotExecuting)
//
// The Machinery types are built by hand with the NodeIds the specification fixes rather than
// loaded from node-opcua-nodesets (DI + Machinery): every server carries its own address space,
// and the two nodesets would add their thousands of nodes to each of the 200 servers, for
// nothing the collector reads (it goes by those NodeIds only).
//
// Each machine toggles Executing <-> NotExecuting once per PERIOD_S at its own phase (seeded
// xorshift32, so every run has the same schedule). Lines on stdout (JSON):
//   {"ready": [ports...], "seconds": s}       once every server listens
//   {"restarted": n, "seconds": s}            after a restart storm
//   {"changes": n, "sessions": n}             every 10 s: state changes made, sessions open
// Lines on stdin: "cycle DOWN_S" ends every server's sessions, subscriptions and connections at
// once and closes its port for DOWN_S seconds, then listens again (the machines' controllers
// reboot together); "restart" shuts every server down and builds a new one on the same port,
// in turn (slow: node-opcua builds each address space anew); "quit" ends the process (as does
// SIGTERM). The machines keep their states (and schedule) through either.
"use strict";
const path = require("path");
const readline = require("readline");
const { OPCUAServer } = require("node-opcua-server");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { DataType } = require("node-opcua-variant");
const { StatusCodes } = require("node-opcua-status-code");
const { coerceNodeId } = require("node-opcua-nodeid");

const [firstPort, count, firstMachine, periodS, seedArg, pkiDir] = process.argv.slice(2);
const MACHINERY = "http://opcfoundation.org/UA/Machinery/";
const DI = "http://opcfoundation.org/UA/DI/";
const VENDOR = "urn:bench:fleet";
const EXECUTING = 5006;
const NOT_EXECUTING = 5007;
const NODESET = process.env.FLEET_NODESET === "standard"
    ? require("node-opcua-nodesets").nodesets.standard
    : require.resolve("node-opcua-address-space/nodesets/mini.Nodeset2.xml");
const ITEM_STATES = { 5004: "OutOfService", 5005: "NotAvailable", 5006: "Executing", 5007: "NotExecuting" };

let seed = Number(seedArg) >>> 0 || 1;
function random() {
    seed ^= seed << 13; seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5; seed >>>= 0;
    return seed / 4294967296;
}

const certificateManager = new OPCUACertificateManager({ rootFolder: path.join(pkiDir, "pki"),
    automaticallyAcceptUnknownCertificate: true });

// One machine per server: its id, port, current state, next change, and the live server's nodes.
const machines = [];
const period = Number(periodS) * 1000;
for (let i = 0; i < Number(count); i++) {
    const id = "M" + String(Number(firstMachine) + i).padStart(4, "0");
    machines.push({ id, port: 0, executing: random() < 0.5, due: Date.now() + random() * period,
        server: null, current: null, currentId: null });
}

async function build(machine, port) {
    const server = new OPCUAServer({
        port, hostname: "127.0.0.1", allowAnonymous: true, serverCertificateManager: certificateManager,
        // one collector session per machine; a few spare for a reconnect whose old session lingers
        serverCapabilities: { maxSessions: 10 }, maxConnectionsPerEndpoint: 10,
        nodeset_filename: [NODESET],
    });
    try {
        await server.initialize();
        populate(server.engine.addressSpace, machine);
        await server.start();
    } catch (err) {
        await server.shutdown(0).catch(() => {});
        throw err;
    }
    machine.server = server;
}

function populate(space, machine) {
    const m = space.registerNamespace(MACHINERY);
    const di = space.registerNamespace(DI);
    const v = space.registerNamespace(VENDOR);
    const itemStateType = m.addObjectType({ nodeId: "i=1002", browseName: "MachineryItemState_StateMachineType",
        subtypeOf: space.findObjectType("FiniteStateMachineType") || space.findObjectType("BaseObjectType") });
    for (const [id, name] of Object.entries(ITEM_STATES)) {
        m.addObject({ nodeId: `i=${id}`, browseName: name, componentOf: itemStateType,
            typeDefinition: space.findObjectType("StateType") || space.findObjectType("BaseObjectType") });
    }
    const folder = m.addFolder(space.rootFolder.objects, { nodeId: "i=1001", browseName: "Machines" });
    const obj = v.addObject({ organizedBy: folder, nodeId: `s=${machine.id}`, browseName: machine.id });
    const blocks = v.addObject({ componentOf: obj, nodeId: `s=${machine.id}.Blocks`,
        browseName: { name: "MachineryBuildingBlocks", namespaceIndex: di.index },
        typeDefinition: space.findObjectType("FolderType") });
    const sm = v.addObject({ componentOf: blocks, nodeId: `s=${machine.id}.MachineryItemState`,
        browseName: { name: "MachineryItemState", namespaceIndex: m.index }, typeDefinition: itemStateType });
    const state = machine.executing ? EXECUTING : NOT_EXECUTING;
    machine.current = v.addVariable({ componentOf: sm, nodeId: `s=${machine.id}.CurrentState`,
        browseName: { name: "CurrentState", namespaceIndex: 0 }, dataType: "LocalizedText",
        value: { dataType: DataType.LocalizedText, value: { text: ITEM_STATES[state], locale: "en" } } });
    machine.currentId = v.addVariable({ propertyOf: machine.current, nodeId: `s=${machine.id}.CurrentState.Id`,
        browseName: { name: "Id", namespaceIndex: 0 }, dataType: "NodeId",
        value: { dataType: DataType.NodeId, value: coerceNodeId(`ns=${m.index};i=${state}`) } });
    machine.ns = m.index;
}

async function listen(machine, port) {
    // The first free port from `port` on (another process may hold one).
    for (let p = port; p < port + 1000; p++) {
        try {
            await build(machine, p);
            return p;
        } catch (err) {
            console.error(`port ${p}: ${err && err.message}`);
        }
    }
    throw new Error(`no free port from ${port}`);
}

async function rebuild(machine) {
    // The same port again; the old listener may take a moment to let it go.
    for (let attempt = 0; ; attempt++) {
        try {
            await build(machine, machine.port);
            return;
        } catch (err) {
            if (attempt >= 50) {
                throw err;
            }
            console.error(`restart on port ${machine.port}: ${err && err.message}; again in 0.2 s`);
            await new Promise((resolve) => setTimeout(resolve, 200));
        }
    }
}

function setState(machine, now) {
    machine.executing = !machine.executing;
    const state = machine.executing ? EXECUTING : NOT_EXECUTING;
    const stamp = new Date(now);
    if (machine.server) {
        machine.current.setValueFromSource({ dataType: DataType.LocalizedText,
            value: { text: ITEM_STATES[state], locale: "en" } }, StatusCodes.Good, stamp);
        machine.currentId.setValueFromSource({ dataType: DataType.NodeId,
            value: coerceNodeId(`ns=${machine.ns};i=${state}`) }, StatusCodes.Good, stamp);
    }
}

function sessions() {
    let n = 0;
    for (const machine of machines) {
        if (machine.server) {
            n += machine.server.engine.currentSessionCount;
        }
    }
    return n;
}

async function cycle(downS) {
    // Every controller reboots at once: sessions (with their subscriptions) and connections end,
    // the port refuses connections for DOWN_S seconds, then listens again. The address space is
    // kept: node-opcua builds one in ~0.1 s (and 50 in turn on a loaded machine in over a
    // minute), which would measure node, not the collector.
    const start = Date.now();
    await Promise.all(machines.map(async (machine) => {
        const server = machine.server;
        for (const session of Object.values(server.engine._sessions || {})) {
            server.engine.closeSession(session.authenticationToken, true, "Terminated");
        }
        for (const endpoint of server.endpoints) {
            endpoint.abruptlyInterruptChannels();
            await new Promise((resolve) => endpoint.killClientSockets(resolve));
        }
        await server.suspendEndPoints();
    }));
    const stopped = (Date.now() - start) / 1000;
    await new Promise((resolve) => setTimeout(resolve, downS * 1000));
    const up = Date.now();
    for (const machine of machines) {
        await machine.server.resumeEndPoints();
    }
    return { stopped, seconds: (Date.now() - start) / 1000, listening: (Date.now() - up) / 1000 };
}

async function restart() {
    const start = Date.now();
    await Promise.all(machines.map(async (machine) => {
        const server = machine.server;
        machine.server = null;
        if (server) {
            await server.shutdown(0);
        }
    }));
    // Started in turn: a controller's boot takes its own time, and node's one thread does them
    // one after the other anyway.
    for (const machine of machines) {
        await rebuild(machine);
    }
    return (Date.now() - start) / 1000;
}

async function main() {
    const start = Date.now();
    let port = Number(firstPort);
    // The first server creates the certificate the others share; the rest follow in turn.
    for (const machine of machines) {
        machine.port = await listen(machine, port);
        port = machine.port + 1;
    }
    console.log(JSON.stringify({ ready: machines.map((m) => m.port), seconds: (Date.now() - start) / 1000 }));
    let changes = 0;
    let restarting = false;
    setInterval(() => {
        const now = Date.now();
        for (const machine of machines) {
            if (now >= machine.due) {
                machine.due += period;
                setState(machine, now);
                changes++;
            }
        }
    }, 100);
    setInterval(() => console.log(JSON.stringify({ changes, sessions: sessions() })), 10000);
    const quit = () => process.exit(0);  // the sockets close with the process: no shutdown one by one
    readline.createInterface({ input: process.stdin }).on("line", async (line) => {
        const [command, arg] = line.trim().split(/\s+/);
        if ((command === "restart" || command === "cycle") && !restarting) {
            restarting = true;
            try {
                if (command === "cycle") {
                    console.log(JSON.stringify({ restarted: machines.length, ...await cycle(Number(arg)) }));
                } else {
                    console.log(JSON.stringify({ restarted: machines.length, seconds: await restart() }));
                }
            } catch (err) {
                console.error(err);
                process.exit(1);
            }
            restarting = false;
        } else if (line.trim() === "quit") {
            quit();
        }
    });
    process.on("SIGTERM", quit);
    process.on("SIGINT", quit);
}

main().catch((err) => { console.error(err); process.exit(1); });
