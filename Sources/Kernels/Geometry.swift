import CKernels

/// How a convolution or pooling window pads its input.
public indirect enum Padding: Equatable, Sendable {
    /// No padding; windows that would overhang are dropped.
    case valid
    /// TensorFlow's "SAME": output = ceil(input / stride), the padding split with the extra
    /// pixel at the bottom/right (EfficientNet-Lite's weights were trained this way).
    case same
    /// Explicit padding in pixels (PyTorch's `padding=` is the symmetric case).
    case explicit(top: Int, bottom: Int, left: Int, right: Int)

    /// Output size and the leading/trailing padding for one axis.
    public func resolve(input: Int, kernel: Int, stride: Int) -> (output: Int, before: Int, after: Int) {
        switch self {
        case .valid:
            return (input >= kernel ? (input - kernel) / stride + 1 : 0, 0, 0)
        case .same:
            let output = (input + stride - 1) / stride
            let total = max((output - 1) * stride + kernel - input, 0)
            return (output, total / 2, total - total / 2)
        case .explicit(let top, let bottom, _, _):
            let padded = input + top + bottom
            return (padded >= kernel ? (padded - kernel) / stride + 1 : 0, top, bottom)
        }
    }

    fileprivate func horizontal() -> Padding {
        if case .explicit(_, _, let left, let right) = self { return .explicit(top: left, bottom: right, left: 0, right: 0) }
        return self
    }

    /// Resolves both axes.
    public func resolve(height: Int, width: Int, kernel: (Int, Int), stride: (Int, Int))
        -> (outHeight: Int, outWidth: Int, top: Int, bottom: Int, left: Int, right: Int)
    {
        let v = resolve(input: height, kernel: kernel.0, stride: stride.0)
        let h = horizontal().resolve(input: width, kernel: kernel.1, stride: stride.1)
        return (v.output, h.output, v.before, v.after, h.before, h.after)
    }
}

/// The geometry of one sliding-window layer on NHWC images.
public struct WindowGeometry: Equatable, Sendable {
    public var inHeight: Int, inWidth: Int, inChannels: Int
    public var kernelH: Int, kernelW: Int
    public var strideH: Int, strideW: Int
    public var padTop: Int, padBottom: Int, padLeft: Int, padRight: Int
    public var outHeight: Int, outWidth: Int

    public init(inHeight: Int, inWidth: Int, inChannels: Int, kernel: (Int, Int), stride: (Int, Int), padding: Padding) {
        self.inHeight = inHeight
        self.inWidth = inWidth
        self.inChannels = inChannels
        kernelH = kernel.0
        kernelW = kernel.1
        strideH = stride.0
        strideW = stride.1
        let r = padding.resolve(height: inHeight, width: inWidth, kernel: kernel, stride: stride)
        padTop = r.top
        padBottom = r.bottom
        padLeft = r.left
        padRight = r.right
        outHeight = r.outHeight
        outWidth = r.outWidth
    }

    public var inPixels: Int { inHeight * inWidth }
    public var outPixels: Int { outHeight * outWidth }
    public var taps: Int { kernelH * kernelW }

    /// The struct the C kernels take.
    public var c: cgk_window {
        cgk_window(height: Int32(inHeight), width: Int32(inWidth), channels: Int32(inChannels),
                   kernel_h: Int32(kernelH), kernel_w: Int32(kernelW), stride_h: Int32(strideH),
                   stride_w: Int32(strideW), pad_top: Int32(padTop), pad_left: Int32(padLeft),
                   out_height: Int32(outHeight), out_width: Int32(outWidth))
    }
}
