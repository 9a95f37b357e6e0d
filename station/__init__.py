"""The line-side station: a PLC triggers, the station takes a frame, asks the inspection service, and writes
OK / NG / ERROR back within the reject window (`python -m station run --config station.yaml`).

No torch and nothing of `model` or `service`: the standard library, httpx, pyyaml, pydantic, prometheus-client
and the protocol libraries (pymodbus, asyncua, paho-mqtt: each imported only when configured); OpenCV only for
an RTSP or device camera.
"""
