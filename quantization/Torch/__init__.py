"""The PyTorch toolchain: torch.ao FX graph mode (static and dynamic) and PT2E on torchao."""
