"""The Cortex-M target: an exported folder's char_lstm.c in a bare-metal firmware for QEMU's
MPS2 boards (boards.py), linked for a real part's flash and RAM (build.py) and run in
qemu-system-arm with instructions counted (qemu.py). `toolkit firmware` is the command."""
