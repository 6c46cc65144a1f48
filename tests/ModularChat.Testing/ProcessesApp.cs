namespace ModularChat.Testing;

/// <summary>
/// The fixture of tests that run the Host only as processes of their own (<see cref="ModularChatApp.StartHostProcessAsync"/>,
/// <see cref="ModularChatApp.RunHostCommandAsync"/>): it starts no host in the test process (<see cref="ModularChatApp.Host"/>
/// stays null), and its database name is its own, so that its processes run on a database of their own too
/// (<see cref="ModularChatApp.ProcessDatabaseAsync"/>), never beside a process of another collection's test. Such a
/// collection can then run beside the assembly's main collection instead of inside it: those tests are among the longest
/// (a process starts, and is stopped, in each) and none of them uses the main collection's host.
/// </summary>
/// <param name="databaseName">The fixture's database, as <see cref="ModularChatApp"/>'s (its processes' is this name with <c>_processes</c>).</param>
public abstract class ProcessesApp(string databaseName) : ModularChatApp(databaseName)
{
    protected override bool StartsHost => false;
}
