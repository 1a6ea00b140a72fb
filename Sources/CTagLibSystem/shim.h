// Intentionally empty: TagLib's headers are C++, included only by Sources/CTagLib/taglib_shim.cpp.
