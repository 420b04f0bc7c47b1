// An OPC UA server of machine tools built with node-opcua from the companion specifications'
// own nodesets (node-opcua-nodesets: DI, IA, Machinery, Machinery Jobs, ISA-95 job control,
// Machine Tools, Woodworking), a stack the collector does not use. Run by the tests, never
// imported by them:
//
//   node opcua_machine_tools.js PORT
//
// It instantiates the companion specs' own types (MachineToolType, WwMachineType) under the
// Machinery `Machines` folder, the way a vendor's server does:
//   mill-item      MachineToolType with MachineryItemState + MachineryOperationMode under
//                  Monitoring/MachineTool (OPC 40501 v1.02)
//   lathe-basic    MachineToolType: OperationMode, a stack light (red, yellow, green) and the
//                  active program's state machine, no item state
//   mill-channels  MachineToolType: OperationMode and two NC channels
//   edge-bander    WwMachineType (Woodworking): State/Machine/Overview CurrentState, CurrentMode
//   cmm-1          a machine with an Identification and no state model at all
// It prints "ready" when listening. Then it reads one JSON command per line on stdin and
// answers "ok" (or "error: ...") per line:
//   {"machine": "lathe-basic", "set": {"operation_mode": 1, "program": 1,
//                                      "stacklight": {"red": false, "green": true}}}
//   keys: item_state / operation_state (NodeId numbers of the Machinery states),
//         operation_mode (MachineOperationMode), program (ProductionProgramStateMachine
//         state number), channels ([ChannelState, ...]), stacklight ({color: on}),
//         ww_state (WwUnitStateEnumeration), ww_mode (WwUnitModeEnumeration)
//   {"stop": true}   shuts the server down and exits
"use strict";
const os = require("os");
const path = require("path");
const readline = require("readline");
const { OPCUAServer } = require("node-opcua-server");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { nodesets } = require("node-opcua-nodesets");
const { DataType } = require("node-opcua-variant");
const { StatusCodes } = require("node-opcua-status-code");
const { coerceNodeId } = require("node-opcua-nodeid");

const MACHINERY = "http://opcfoundation.org/UA/Machinery/";
const MACHINE_TOOL = "http://opcfoundation.org/UA/MachineTool/";
const WOODWORKING = "http://opcfoundation.org/UA/Woodworking/";
const IA = "http://opcfoundation.org/UA/IA/";
const DI = "http://opcfoundation.org/UA/DI/";
// ProductionProgramStateMachineType's states (OPC 40501), by state number.
const PROGRAM_STATES = { 0: 5039, 1: 5041, 2: 5038, 3: 5040, 4: 5037 }; // Initializing Running Ended Interrupted Aborted
const SIGNAL_COLORS = { red: 1, green: 2, blue: 3, yellow: 4 };

const port = Number(process.argv[2]);

// Source timestamps strictly increase, a millisecond apart at least (OPC UA's DateTime is finer,
// JavaScript's Date is not): two writes of one command are two changes in the order written,
// as a controller stamps them, not two values of one instant.
let lastStamp = 0;
function set(variable, dataType, value) {
    lastStamp = Math.max(Date.now(), lastStamp + 1);
    variable.setValueFromSource({ dataType, value }, StatusCodes.Good, new Date(lastStamp));
}

function child(node, ...names) {
    for (const name of names) {
        const next = node.getChildByName(name) || node.getComponentByName(name) || node.getPropertyByName(name);
        if (!next) throw new Error(`${node.browseName.toString()} has no child ${name}`);
        node = next;
    }
    return node;
}

async function main() {
    const pki = path.join(os.tmpdir(), `opcua-mt-${process.pid}`);
    const server = new OPCUAServer({
        port, hostname: "127.0.0.1", allowAnonymous: true,
        serverCertificateManager: new OPCUACertificateManager({ rootFolder: path.join(pki, "pki"),
            automaticallyAcceptUnknownCertificate: true }),
        nodeset_filename: [nodesets.standard, nodesets.di, nodesets.ia, nodesets.machinery,
            nodesets.isa95JobControl, nodesets.machineryJobs, nodesets.machineTool, nodesets.woodWorking],
    });
    await server.initialize();
    const as = server.engine.addressSpace;
    const nsOf = (uri) => as.getNamespaceIndex(uri);
    const node = (uri, id) => as.findNode(coerceNodeId(`ns=${nsOf(uri)};i=${id}`));
    const machines = node(MACHINERY, 1001);
    const own = as.registerNamespace("urn:test:machine-tools");
    const mtType = as.findObjectType("MachineToolType", nsOf(MACHINE_TOOL));
    const wwType = as.findObjectType("WwMachineType", nsOf(WOODWORKING));
    const lightType = as.findObjectType("StackElementLightType", nsOf(IA));
    const channelType = as.findObjectType("ChannelMonitoringType", nsOf(MACHINE_TOOL));
    const handles = {};

    function identify(machine, serial, model) {
        const ident = child(machine, "Identification");
        set(child(ident, "Manufacturer"), DataType.LocalizedText, { text: "ACME Werkzeugmaschinen" });
        set(child(ident, "SerialNumber"), DataType.String, serial);
        set(child(ident, "ProductInstanceUri"), DataType.String, `urn:acme:${serial}`);
        const modelNode = ident.getChildByName("Model");
        if (modelNode) set(modelNode, DataType.LocalizedText, { text: model });
    }

    function stateMachineId(stateMachine) {
        return child(stateMachine, "CurrentState", "Id");
    }

    // mill-item: the Machinery item state and operation mode under Monitoring/MachineTool.
    {
        const m = mtType.instantiate({ browseName: "mill-item", organizedBy: machines,
            optionals: ["Identification.Model", "Monitoring.MachineTool.MachineryItemState",
                "Monitoring.MachineTool.MachineryOperationMode"] });
        identify(m, "SN-1001", "VMC 500");
        const mt = child(m, "Monitoring", "MachineTool");
        handles["mill-item"] = {
            item_state: stateMachineId(child(mt, "MachineryItemState")),
            operation_state: stateMachineId(child(mt, "MachineryOperationMode")),
            operation_mode: child(mt, "OperationMode"),
        };
    }
    // lathe-basic: operation mode, stack light and active program.
    {
        const m = mtType.instantiate({ browseName: "lathe-basic", organizedBy: machines,
            optionals: ["Identification.Model", "Monitoring.Stacklight"] });
        identify(m, "SN-2002", "CTX 310");
        const stack = child(m, "Monitoring", "Stacklight");
        const lights = {};
        ["red", "yellow", "green"].forEach((color, i) => {
            const light = lightType.instantiate({ browseName: `Light${i}`, componentOf: stack,
                optionals: ["SignalColor", "SignalOn"] });
            set(child(light, "SignalColor"), DataType.Int32, SIGNAL_COLORS[color]);
            set(child(light, "SignalOn"), DataType.Boolean, false);
            lights[color] = child(light, "SignalOn");
        });
        const program = child(m, "Production", "ActiveProgram", "State", "CurrentState");
        handles["lathe-basic"] = {
            operation_mode: child(m, "Monitoring", "MachineTool", "OperationMode"),
            lights, program_id: child(program, "Id"), program_number: child(program, "Number"),
        };
    }
    // mill-channels: operation mode and two NC channels.
    {
        const m = mtType.instantiate({ browseName: "mill-channels", organizedBy: machines, optionals: [] });
        identify(m, "SN-3003", "");
        const monitoring = child(m, "Monitoring");
        const channels = [1, 2].map((n) => {
            const c = channelType.instantiate({ browseName: `Channel${n}`, componentOf: monitoring });
            set(child(c, "ChannelState"), DataType.Int32, 2);
            return child(c, "ChannelState");
        });
        handles["mill-channels"] = { operation_mode: child(monitoring, "MachineTool", "OperationMode"), channels };
    }
    // edge-bander: a woodworking machine.
    {
        const m = wwType.instantiate({ browseName: "edge-bander", organizedBy: machines, optionals: [] });
        const overview = child(m, "State", "Machine", "Overview");
        handles["edge-bander"] = { ww_state: child(overview, "CurrentState"), ww_mode: child(overview, "CurrentMode") };
        set(handles["edge-bander"].ww_state, DataType.Int32, 0);
        set(handles["edge-bander"].ww_mode, DataType.Int32, 1);
        const ident = child(m, "Identification");
        set(child(ident, "Manufacturer"), DataType.LocalizedText, { text: "Holz AG" });
        set(child(ident, "SerialNumber"), DataType.String, "WW-77");
    }
    // cmm-1: identification only.
    {
        const m = own.addObject({ browseName: "cmm-1", organizedBy: machines });
        const identType = as.findObjectType("MachineIdentificationType", nsOf(MACHINERY));
        const ident = identType.instantiate({ browseName: { name: "Identification", namespaceIndex: nsOf(DI) },
            componentOf: m, optionals: [] });
        set(child(ident, "Manufacturer"), DataType.LocalizedText, { text: "Mess GmbH" });
        set(child(ident, "SerialNumber"), DataType.String, "CMM-9");
    }

    const apply = {
        item_state: (h, v) => set(h.item_state, DataType.NodeId, coerceNodeId(`ns=${nsOf(MACHINERY)};i=${v}`)),
        operation_state: (h, v) => set(h.operation_state, DataType.NodeId, coerceNodeId(`ns=${nsOf(MACHINERY)};i=${v}`)),
        operation_mode: (h, v) => set(h.operation_mode, DataType.Int32, v),
        program: (h, v) => {
            set(h.program_id, DataType.NodeId, coerceNodeId(`ns=${nsOf(MACHINE_TOOL)};i=${PROGRAM_STATES[v]}`));
            set(h.program_number, DataType.UInt32, v);
        },
        channels: (h, v) => v.forEach((s, i) => set(h.channels[i], DataType.Int32, s)),
        stacklight: (h, v) => Object.entries(v).forEach(([color, on]) => set(h.lights[color], DataType.Boolean, on)),
        ww_state: (h, v) => set(h.ww_state, DataType.Int32, v),
        ww_mode: (h, v) => set(h.ww_mode, DataType.Int32, v),
    };

    await server.start();
    console.log("ready");
    const lines = readline.createInterface({ input: process.stdin });
    for await (const line of lines) {
        if (!line.trim()) continue;
        try {
            const command = JSON.parse(line);
            if (command.stop) {
                await server.shutdown(0);
                console.log("ok");
                process.exit(0);
            }
            const h = handles[command.machine];
            if (!h) throw new Error(`unknown machine ${command.machine}`);
            for (const [key, value] of Object.entries(command.set)) {
                if (!apply[key]) throw new Error(`unknown key ${key}`);
                apply[key](h, value);
            }
            console.log("ok");
        } catch (err) {
            console.log(`error: ${err.message}`);
        }
    }
    await server.shutdown(0);
    process.exit(0);
}

main().catch((err) => { console.error(err); process.exit(1); });
