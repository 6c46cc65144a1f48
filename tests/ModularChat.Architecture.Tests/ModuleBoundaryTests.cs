using System.Reflection;
using NetArchTest.Rules;

namespace ModularChat.Architecture.Tests;

/// <summary>
/// Modules talk only through each other's Contracts: a module's implementation never depends on
/// another module's implementation, and Contracts and BuildingBlocks depend on no module at all.
/// </summary>
public sealed class ModuleBoundaryTests
{
    private static readonly Assembly[] Assemblies = LoadModularChatAssemblies();

    /// <summary>Module implementation assemblies: every ModularChat.* that is not shared, a contract, the host or a test.</summary>
    private static readonly Assembly[] Modules = Assemblies.Where(a => IsModule(a.GetName().Name!)).ToArray();

    public static TheoryData<string> ModuleNames => new(Modules.Select(m => m.GetName().Name!));

    [Fact]
    public void The_modules_are_found()
        => Assert.Contains("ModularChat.Conversations", Modules.Select(m => m.GetName().Name));

    [Theory]
    [MemberData(nameof(ModuleNames))]
    public void A_module_does_not_depend_on_another_modules_implementation(string module)
    {
        var others = Modules.Select(m => m.GetName().Name!).Where(n => n != module).ToArray();
        Assert.Empty(Violations(Assemblies.Single(a => a.GetName().Name == module), others));
    }

    [Fact]
    public void Contracts_and_building_blocks_depend_on_no_module_implementation()
    {
        var modules = Modules.Select(m => m.GetName().Name!).ToArray();
        foreach (var shared in Assemblies.Where(a => a.GetName().Name!.EndsWith(".Contracts", StringComparison.Ordinal) || a.GetName().Name == "ModularChat.BuildingBlocks"))
        {
            Assert.Empty(Violations(shared, modules));
        }
    }

    [Fact]
    public void Contracts_depend_on_nothing_but_other_contracts()
    {
        foreach (var contracts in Assemblies.Where(a => a.GetName().Name!.EndsWith(".Contracts", StringComparison.Ordinal)))
        {
            var references = contracts.GetReferencedAssemblies().Select(r => r.Name!)
                .Where(n => n.StartsWith("ModularChat.", StringComparison.Ordinal) && !n.EndsWith(".Contracts", StringComparison.Ordinal));
            Assert.Empty(references);
        }
    }

    [Fact]
    public void The_rule_catches_a_dependency_on_a_module_implementation()
    {
        // The Host composes the modules, so it must show up as depending on them: proof the rule can fail.
        var host = Assemblies.Single(a => a.GetName().Name == "ModularChat.Host");
        Assert.NotEmpty(Violations(host, Modules.Select(m => m.GetName().Name!).ToArray()));
    }

    /// <summary>Types of <paramref name="assembly"/> that use any type of the <paramref name="forbiddenAssemblies"/>.</summary>
    private static IReadOnlyList<string> Violations(Assembly assembly, string[] forbiddenAssemblies)
    {
        // Full type names, not namespace prefixes: "ModularChat.X." would also match the allowed "ModularChat.X.Contracts".
        var forbiddenTypes = Assemblies.Where(a => forbiddenAssemblies.Contains(a.GetName().Name))
            .SelectMany(a => a.GetTypes())
            .Where(t => !t.FullName!.Contains('<', StringComparison.Ordinal))
            .Select(t => t.FullName!)
            .ToArray();
        if (forbiddenTypes.Length == 0)
        {
            return [];
        }

        var result = Types.InAssembly(assembly).ShouldNot().HaveDependencyOnAny(forbiddenTypes).GetResult();
        return result.FailingTypeNames?.ToList() ?? [];
    }

    private static bool IsModule(string name)
        => name.StartsWith("ModularChat.", StringComparison.Ordinal)
           && !name.EndsWith(".Contracts", StringComparison.Ordinal)
           && !name.EndsWith(".Tests", StringComparison.Ordinal)
           && name is not ("ModularChat.BuildingBlocks" or "ModularChat.Host" or "ModularChat.Testing");

    private static Assembly[] LoadModularChatAssemblies()
    {
        var directory = AppContext.BaseDirectory;
        return Directory.GetFiles(directory, "ModularChat.*.dll")
            .Select(path => Assembly.LoadFrom(path))
            .Where(a => !a.GetName().Name!.EndsWith(".Tests", StringComparison.Ordinal))
            .ToArray();
    }
}
